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


def serving_gate(cfg: RunConfig, *, use_task: bool) -> Any:
    """The calibrated gate for ``serve.gate`` (``gate/gate.json``), checked against the model being served."""
    from cowest.errors import ConfigError
    from cowest.inference.gate import Gate, load_gate
    from cowest.rundir import RunDir

    info = load_gate(cfg)
    if info is None:
        raise ConfigError(f"serve.gate: no calibrated gate in {RunDir(cfg).gate / 'gate.json'}; run "
                          "`cowest calibrate RECIPE` first (or `cowest eval` with routed in eval.systems)")
    if not use_task:
        raise ConfigError("serve.gate needs the task's prompts (the gate was calibrated on them): name the task in "
                          "the recipe or pass --prompt task")
    kind, _ = serving_choice(cfg)
    served = "aligned" if kind == "aligned" else "sft"
    if info.get("model") != served:
        raise ConfigError(f"serve.gate: the gate was calibrated on the {info.get('model')} model but this run serves "
                          f"the {served} model; run `cowest calibrate RECIPE --overwrite`")
    return Gate.from_json(info)
