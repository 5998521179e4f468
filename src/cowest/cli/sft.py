"""``cowest sft``: supervised fine-tuning of the weak model (LoRA) on the task's training split."""

from __future__ import annotations

from cowest.cli.common import OverridesArg, OverwriteOpt, RecipeArg, load_cli_config


def sft(recipe: RecipeArg = None, overrides: OverridesArg = None, overwrite: OverwriteOpt = False) -> None:
    """Fine-tune the weak model on the training split; writes runs/<name>/sft/ (adapter, loss curve).

    Examples:

        cowest sft recipes/demo.yaml

        cowest sft recipes/medmcqa_cpu.yaml task.n_train=200 sft.epochs=1 sft.cot_targets=strong

        accelerate launch -m cowest sft recipes/medmcqa_gpu.yaml sft.bf16=true
    """
    cfg = load_cli_config(recipe, overrides)
    import json

    from cowest.rundir import RunDir
    from cowest.sft.train import run_sft

    rd = RunDir(cfg).create()
    out = run_sft(cfg, overwrite=overwrite)
    from cowest.training import is_main_process

    if not is_main_process():
        return
    m = json.loads((rd.sft / "metrics.json").read_text()) if (rd.sft / "metrics.json").exists() else {}
    losses = [r["loss"] for r in m.get("log_history", []) if "loss" in r]
    loss = f", loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else ""
    print(f"sft: {m.get('global_step', '?')} steps{loss}; adapter: {out}")
