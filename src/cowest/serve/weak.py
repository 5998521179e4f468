"""Which weak model a served run drafts with: aligned (last finished round) > SFT > base."""

from __future__ import annotations

from typing import Any

from cowest.config import RunConfig
from cowest.rundir import RunDir


def weak_choice(cfg: RunConfig, rd: RunDir) -> tuple[str, str | None]:
    """(kind, adapter dir): ``aligned``/``sft``/``base``. ``weak.adapter`` in the config wins over the run's."""
    if cfg.weak.adapter:
        return "configured", cfg.weak.adapter
    aligned = rd.cowest_adapter()
    if aligned is not None:
        return "aligned", aligned
    sft = rd.collab_adapter()
    return ("sft", sft) if sft else ("base", None)


def load_serving_weak(cfg: RunConfig, rd: RunDir) -> tuple[Any, str]:
    """The weak model to serve and a one-line description of what was loaded."""
    kind, adapter = weak_choice(cfg, rd)
    what = f"{cfg.weak.model} + {kind} adapter {adapter}" if adapter else f"{cfg.weak.model} (base, not fine-tuned)"
    if cfg.weak.backend == "vllm":
        from cowest.models.vllm_backend import VLLMWeakModel

        return VLLMWeakModel.load(cfg.weak, adapter=adapter), f"{what} [vLLM]"
    # the eval's loader: it knows how each stage's adapters are rebuilt (e.g. stacked DPO chains)
    from cowest.eval.evaluate import make_weak_loader

    load = make_weak_loader(cfg, rd)
    wm = load("aligned") if kind == "aligned" else load("sft")
    return wm, what
