"""``cowest align``: DPO of the weak model on the feedback's preference pairs."""

from __future__ import annotations

import typer

from cowest.cli.common import OverridesArg, OverwriteOpt, RecipeArg, load_cli_config


def align(
    recipe: RecipeArg = None,
    overrides: OverridesArg = None,
    overwrite: OverwriteOpt = False,
    round_: int = typer.Option(1, "--round", min=1, help="Which feedback round's pairs to align on."),
) -> None:
    """DPO on the preference pairs (reference = the SFT model); writes runs/<name>/align/round<r>/.

    Examples:

        cowest align recipes/demo.yaml

        cowest align recipes/ifqa_cpu.yaml align.beta=0.2 align.epochs=1

        cowest align recipes/medmcqa_cpu.yaml --round 2

        cowest align recipes/medmcqa_cpu.yaml align.eval_share=0.1   # DPO measured on 10% held-out questions
    """
    cfg = load_cli_config(recipe, overrides)
    import json

    from cowest.align.dpo import run_align
    from cowest.rundir import RunDir
    from cowest.training import is_main_process

    rd = RunDir(cfg).create()
    out = run_align(cfg, round_, overwrite=overwrite)
    if not is_main_process():
        return
    path = rd.align(round_) / "metrics.json"
    m = json.loads(path.read_text()) if path.exists() else {}
    rows = [r for r in m.get("log_history", []) if "rewards/margins" in r]
    last = f", last reward margin {rows[-1]['rewards/margins']:.3f}, accuracy {rows[-1]['rewards/accuracies']:.2f}" if rows else ""
    held = (m.get("eval") or {}).get("final") or {}
    if "rewards/accuracies" in held:  # align.eval_share > 0: the same figures on pairs it did not train on
        last += (f"; held out ({m['eval']['pairs']} pairs): margin {held['rewards/margins']:.3f}, "
                 f"accuracy {held['rewards/accuracies']:.2f}")
    print(f"align round {round_}: {m.get('n_pairs', '?')} pairs, {m.get('global_step', '?')} steps{last}; adapter: {out}")
