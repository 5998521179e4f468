"""Which weak model a stage uses, with which adapters, and how it is loaded: the one place that decides.

    sft            the base model (weak.model), trained there
    feedback r=1   the SFT model (``weak.adapter``, when set, stands in for the run's own)
    feedback r>1   the aligned model of round r-1
    align r        starts from, and is referenced to, feedback r's drafting model
    eval           weak, superICL, collab: the SFT model (the base when there is none);
                   cowest: the aligned model of the last finished round
    serve          weak.adapter > aligned (last finished round) > SFT > base
    gate           the model whose drafts the confidence gate scores (eval's routed system, serve --gate):
                   aligned (last finished round) > SFT

A model is a *chain*: ``{"base": "weak" | <full model dir>, "merge": [adapter dirs, merged in order]}``, paths
relative to the run directory so a moved run still loads. An aligned round writes its chain in
``align/round<r>/adapter_info.json``.
"""

from __future__ import annotations

import dataclasses
import gc
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cowest.config import RunConfig
from cowest.errors import ModelError, NotReadyError
from cowest.rundir import RunDir

Chain = dict[str, Any]


def rel(rd: RunDir, p: str | Path) -> str:
    """Paths inside the run dir are stored relative to it, so a moved run dir still loads."""
    try:
        return str(Path(p).resolve().relative_to(rd.root.resolve()))
    except ValueError:
        return str(Path(p).resolve())


def absolute(rd: RunDir, p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() else rd.root / q


# --------------------------------------------------------------------------------------------------
# which weights


def sft_chain(cfg: RunConfig) -> Chain | None:
    """The SFT weak model (``weak.adapter`` wins over the run's), or None when there is none."""
    from cowest.training import is_full_model_dir

    rd = RunDir(cfg)
    sft = rd.collab_adapter()
    if sft is None:
        return None
    if is_full_model_dir(sft):  # sft.lora=false saved a whole model
        return {"base": rel(rd, sft), "merge": []}
    return {"base": "weak", "merge": [rel(rd, sft)]}


def aligned_chain(cfg: RunConfig, round_: int) -> Chain:
    """Round ``round_``'s aligned model, as its ``adapter_info.json`` describes it."""
    path = RunDir(cfg).align(round_) / "adapter_info.json"
    if not path.exists():
        raise NotReadyError(f"align round {round_} has not finished: run `cowest align --round {round_}` first")
    return json.loads(path.read_text())


def last_aligned_round(cfg: RunConfig) -> int | None:
    aligned = RunDir(cfg).cowest_adapter()
    return int(Path(aligned).parent.name.removeprefix("round")) if aligned else None


def drafting_chain(cfg: RunConfig, round_: int) -> Chain:
    """The model feedback round ``round_`` drafts with, which align round ``round_`` starts from."""
    if round_ > 1:
        info = aligned_chain(cfg, round_ - 1)
        return {"base": info["base"], "merge": info["merge"]}
    chain = sft_chain(cfg)
    if chain is None:
        raise NotReadyError(f"no SFT weak model in {RunDir(cfg).sft_adapter}: run `cowest sft` first "
                            "(or set weak.adapter)")
    return chain


# --------------------------------------------------------------------------------------------------
# loading


def load_chain(cfg: RunConfig, chain: Chain, *, dtype: Any = None) -> Any:
    """Base weights with every adapter in ``chain["merge"]`` merged in, in order (a plain, trainable model)."""
    from peft import PeftModel

    from cowest.training import load_causal_lm, resolve_base

    rd = RunDir(cfg)
    path, gguf = resolve_base(cfg) if chain["base"] == "weak" else (str(absolute(rd, chain["base"])), None)
    model = load_causal_lm(path, gguf_file=gguf, dtype=dtype)
    for a in chain["merge"]:
        model = PeftModel.from_pretrained(model, str(absolute(rd, a))).merge_and_unload()
    return model


def tokenizer_dir(cfg: RunConfig, chain: Chain) -> str:
    rd = RunDir(cfg)
    for p in reversed(chain["merge"]):
        if (absolute(rd, p) / "tokenizer_config.json").exists():
            return str(absolute(rd, p))
    if chain["base"] != "weak":
        return str(absolute(rd, chain["base"]))
    from cowest.training import resolve_base

    return resolve_base(cfg)[0]


def load_aligned_weak_model(cfg: RunConfig, round_: int) -> tuple[Any, Any]:
    """(model, tokenizer) of round ``round_``'s aligned weak model, adapters merged, on weak.device/dtype."""
    from cowest.models.weak import merge_dtype, resolve_device, resolve_dtype
    from cowest.training import load_tokenizer

    info = aligned_chain(cfg, round_)
    device = resolve_device(cfg.weak.device)  # the same resolution as WeakModel.load
    dtype = resolve_dtype(cfg.weak.dtype, device)
    fold = merge_dtype(dtype, merging=bool(info["merge"]))
    model = load_chain(cfg, info, dtype=fold).to(device=device, dtype=dtype).eval()
    return model, load_tokenizer(tokenizer_dir(cfg, info))


def load_weak(cfg: RunConfig, chain: Chain | None, *, aligned_round: int | None = None) -> Any:
    """A WeakModel (or the vLLM one) for drafting from ``chain``; the base model when ``chain`` is None."""
    from cowest.models.weak import WeakModel

    rd = RunDir(cfg)
    w = dataclasses.replace(cfg.weak, adapter=None)
    if chain is None:
        return WeakModel.load(w)
    if aligned_round is not None and cfg.weak.backend != "vllm":
        model, tokenizer = load_aligned_weak_model(cfg, aligned_round)
        return WeakModel(model, tokenizer, cfg.weak)
    if chain["base"] != "weak":
        w = dataclasses.replace(w, model=str(absolute(rd, chain["base"])), gguf_file=None)
    merge = [str(absolute(rd, a)) for a in chain["merge"]]
    if cfg.weak.backend == "vllm" and len(merge) > 1:
        raise ModelError(f"{merge[-1]} must be stacked on {merge[0]}; weak.backend=vllm needs one folded adapter")
    return WeakModel.load(w, adapter=merge[0] if len(merge) == 1 else (merge or None))


def weak_for(cfg: RunConfig, kind: str, round_: int | None = None) -> Any:
    """The drafting model: ``kind`` is ``sft`` (base when untrained), ``aligned`` (round ``round_``, default the
    last finished one; None when there is none) or ``feedback`` (what feedback round ``round_`` drafts with)."""
    if kind == "feedback":
        r = round_ or 1
        return load_weak(cfg, drafting_chain(cfg, r), aligned_round=r - 1 if r > 1 else None)
    if kind == "aligned":
        r = round_ if round_ is not None else last_aligned_round(cfg)
        return None if r is None else load_weak(cfg, aligned_chain(cfg, r), aligned_round=r)
    if kind == "sft":
        return load_weak(cfg, sft_chain(cfg))
    raise ValueError(f"unknown weak model kind {kind!r}")


def weak_loader(cfg: RunConfig) -> Callable[[str], Any]:
    """``load("sft" | "aligned")`` for eval, keeping at most one model in memory."""
    loaded: dict[str, Any] = {}

    def load(kind: str) -> Any:
        if kind not in loaded:
            loaded.clear()
            gc.collect()
            loaded[kind] = weak_for(cfg, kind)
        return loaded[kind]

    return load


def serving_choice(cfg: RunConfig) -> tuple[str, str | None]:
    """(kind, adapter dir) a served run drafts with: ``configured`` (weak.adapter) > ``aligned`` > ``sft`` > ``base``."""
    rd = RunDir(cfg)
    if cfg.weak.adapter:
        return "configured", cfg.weak.adapter
    aligned = rd.cowest_adapter()
    if aligned is not None:
        return "aligned", aligned
    sft = rd.collab_adapter()
    return ("sft", sft) if sft else ("base", None)


def gate_model(cfg: RunConfig) -> str:
    """The drafting model the gate is calibrated on and routes: ``aligned`` (gate + CoWest), or ``sft`` when no
    aligned round has finished (gate + plain collaboration)."""
    return "aligned" if last_aligned_round(cfg) is not None else "sft"
