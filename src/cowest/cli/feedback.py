"""``cowest feedback``: collaborative feedback (weak drafts scored against the strong model alone)."""

from __future__ import annotations

import typer

from cowest.cli.common import OverridesArg, OverwriteOpt, RecipeArg, load_cli_config


def feedback(
    recipe: RecipeArg = None,
    overrides: OverridesArg = None,
    overwrite: OverwriteOpt = False,
    round_: int = typer.Option(1, "--round", min=1, help="Feedback round; round r drafts with round r-1's aligned model."),
) -> None:
    """Draft K answers per training question, have the strong model refine each, keep the drafts that
    beat the strong model alone; writes runs/<name>/feedback/round<r>/ (records, pairs, stats).
    Interrupted runs resume where they stopped without paying for any strong answer twice.

    Examples:

        cowest feedback recipes/demo.yaml

        cowest feedback recipes/ifqa_cpu.yaml feedback.k=6 feedback.evaluator=judge

        cowest feedback recipes/medmcqa_cpu.yaml --round 2
    """
    cfg = load_cli_config(recipe, overrides)
    from cowest.feedback.collect import run_feedback
    from cowest.rundir import RunDir

    rd = RunDir(cfg).create()
    st = run_feedback(cfg, round_, overwrite=overwrite)
    why = ", ".join(f"{k} {v}" for k, v in st["no_pair"].items() if v) or "none"
    print(
        f"feedback round {round_}: {st['questions']} questions, {st['chosen']} chosen / {st['rejected']} rejected "
        f"drafts, {st['pairs']} pairs from {st['questions_with_pairs']} questions (no pair: {why}); "
        f"{st['strong_calls']} paid strong calls; {rd.feedback(round_)}"
    )
