"""The weak model a served run drafts with (the choice is :func:`cowest.weights.serving_choice`'s)."""

from __future__ import annotations

from typing import Any

from cowest.config import RunConfig
from cowest.weights import serving_choice, weak_for


def load_serving_weak(cfg: RunConfig) -> tuple[Any, str]:
    """The weak model to serve and a one-line description of what was loaded."""
    kind, adapter = serving_choice(cfg)
    what = f"{cfg.weak.model} + {kind} adapter {adapter}" if adapter else f"{cfg.weak.model} (base, not fine-tuned)"
    wm = weak_for(cfg, "aligned" if kind == "aligned" else "sft")
    return wm, what + (" [vLLM]" if cfg.weak.backend == "vllm" else "")
