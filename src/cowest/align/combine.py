"""Fold two stacked LoRA adapters into one standard PEFT adapter on the original base.

DPO trains a fresh LoRA (B2·A2, scale s2) on W' = W + s1·B1·A1 (the SFT adapter merged in). The
aligned weights W + s1·B1·A1 + s2·B2·A2 equal one LoRA of rank r1 + r2 with scale 1:

    A = [A1; A2]            (stacked rows)
    B = [s1·B1, s2·B2]      (stacked columns)

so the aligned model is ``PeftModel.from_pretrained(base, combined)``: exact, self-contained, and
loadable by any PEFT user. Modules only one adapter touches get zero blocks from the other.
:func:`combinable` says when this applies (plain LoRA only: no DoRA, rank/alpha patterns, saved
modules or embedding LoRA); otherwise the caller keeps the adapters stacked.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

_PLAIN_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


def _config(path: Path) -> dict[str, Any]:
    return json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))


def _weights(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def combinable(*paths: str | Path) -> bool:
    for p in map(Path, paths):
        if not (p / "adapter_model.safetensors").exists():
            return False
        c = _config(p)
        if c.get("peft_type") != "LORA" or c.get("use_dora") or c.get("rank_pattern") or c.get("alpha_pattern"):
            return False
        if c.get("modules_to_save") or c.get("trainable_token_indices") or c.get("lora_bias") or c.get("bias") != "none":
            return False
        if c.get("target_parameters") or c.get("layer_replication") or not isinstance(c.get("target_modules"), list):
            return False
        if not all(k.endswith(_PLAIN_SUFFIXES) for k in _weights(p)):
            return False
    return True


def _scale(c: dict[str, Any]) -> float:
    r, alpha = c["r"], c["lora_alpha"]
    return alpha / math.sqrt(r) if c.get("use_rslora") else alpha / r


def _modules(sd: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    mods: dict[str, list[Any]] = {}
    for k, v in sd.items():
        name, part = k.rsplit(".lora_", 1)
        mods.setdefault(name, [None, None])[0 if part.startswith("A") else 1] = v
    return {n: (a, b) for n, (a, b) in mods.items()}


def combine_lora(first: str | Path, second: str | Path, out: str | Path) -> Path:
    """Write the single adapter equal to ``first`` merged, then ``second`` applied (see module doc)."""
    import torch
    from safetensors.torch import save_file

    first, second, out = Path(first), Path(second), Path(out)
    c1, c2 = _config(first), _config(second)
    m1, m2 = _modules(_weights(first)), _modules(_weights(second))
    r1, r2 = int(c1["r"]), int(c2["r"])
    s1, s2 = _scale(c1), _scale(c2)
    combined: dict[str, Any] = {}
    for name in sorted(set(m1) | set(m2)):
        a1, b1 = m1.get(name, (None, None))
        a2, b2 = m2.get(name, (None, None))
        ref_a = a1 if a1 is not None else a2
        ref_b = b1 if b1 is not None else b2
        dt = torch.float32
        in_f, out_f = ref_a.shape[1], ref_b.shape[0]
        a1 = a1.to(dt) if a1 is not None else torch.zeros(r1, in_f, dtype=dt)
        b1 = b1.to(dt) * s1 if b1 is not None else torch.zeros(out_f, r1, dtype=dt)
        a2 = a2.to(dt) if a2 is not None else torch.zeros(r2, in_f, dtype=dt)
        b2 = b2.to(dt) * s2 if b2 is not None else torch.zeros(out_f, r2, dtype=dt)
        combined[f"{name}.lora_A.weight"] = torch.cat([a1, a2], dim=0).contiguous()
        combined[f"{name}.lora_B.weight"] = torch.cat([b1, b2], dim=1).contiguous()
    cfg = dict(c1)
    r = r1 + r2
    targets = sorted(set(_as_list(c1.get("target_modules"))) | set(_as_list(c2.get("target_modules"))))
    cfg.update(r=r, lora_alpha=r, use_rslora=False, lora_dropout=0.0, target_modules=targets, inference_mode=True)
    out.mkdir(parents=True, exist_ok=True)
    save_file(combined, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def _as_list(t: Any) -> list[str]:
    if t is None:
        return []
    return [t] if isinstance(t, str) else list(t)
