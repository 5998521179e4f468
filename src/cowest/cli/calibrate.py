"""``cowest calibrate``: calibrate the confidence gate on held-out training questions (``gate/gate.json``)."""

from __future__ import annotations

from cowest.cli.common import OverridesArg, OverwriteOpt, RecipeArg, load_cli_config


def calibrate(recipe: RecipeArg = None, overrides: OverridesArg = None, overwrite: OverwriteOpt = False) -> None:
    """Score the weak drafts of gate.calibration_questions held-out training questions (never the eval split):
    AUROC of each confidence score for "the draft is right", the chosen score and the threshold that sends
    gate.strong_share of the questions to the strong model. Writes runs/<name>/gate/gate.json, which
    `cowest serve --gate` and eval's routed system use. The drafting model is the aligned one (SFT when no
    round is aligned). Another gate.strong_share or gate.score reuses the drafts. Notes say when the gate has
    nothing to route on: drafts no better than answers that ignore the question (closed tasks), an auto-chosen
    score whose AUROC falls out of bag (chosen as the best of three on the same questions), or a chosen score
    whose AUROC CI includes 0.5.

    Examples:

        cowest calibrate recipes/medmcqa_cpu.yaml

        cowest calibrate recipes/medmcqa_cpu.yaml gate.strong_share=0.3 gate.score=agreement
    """
    cfg = load_cli_config(recipe, overrides)
    from rich.console import Console
    from rich.table import Table

    from cowest.inference.gate import calibrate as run_calibration
    from cowest.inference.gate import load_gate
    from cowest.inference.gate_check import describe
    from cowest.rundir import RunDir
    from cowest.weights import gate_model, weak_loader

    kind = gate_model(cfg)
    RunDir(cfg).create()
    gate = run_calibration(cfg, weak_loader(cfg), kind, overwrite=overwrite)
    info = load_gate(cfg) or {}
    table = Table(title=f"gate calibration: {info.get('n')} held-out training questions, {kind} drafts "
                        f"({100 * (info.get('weak_right') or 0):.1f}% right)")
    table.add_column("score")
    table.add_column("AUROC (95% CI)", justify="right")
    for name, a in info.get("aurocs", {}).items():
        ci = a.get("ci")
        txt = f"{a['auroc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if a.get("auroc") is not None else "undefined"
        table.add_row(name + (" (chosen)" if name == gate.score else ""), txt)
    console = Console()
    console.print(table)
    if checked := describe(info):
        console.print(f"calibration checks: {checked}", soft_wrap=True)
    notes = list(info.get("notes", []))
    if kind == "sft":
        notes.insert(0, "no aligned round has finished: the gate scores the SFT model's drafts"
                     + ("" if RunDir(cfg).collab_adapter() else " (no SFT adapter either: the base model's)"))
    for note in notes:
        console.print(f"[yellow]note[/yellow]: {note}")
    console.print(f"gate: {gate.score} < {gate.threshold:.4g} goes to the strong model; target "
                  f"{100 * gate.strong_share:.0f}% strong calls, {100 * (info.get('calibrated_share') or 0):.0f}% on "
                  f"the calibration questions"
                  + (f"; the drafts it keeps were right {100 * info['right_when_kept']:.0f}%"
                     if info.get("right_when_kept") is not None else "")
                  + f"\n{RunDir(cfg).gate / 'gate.json'}", soft_wrap=True)
