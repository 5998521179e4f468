"""``cowest validate``: the alignment gain on held-out training questions (aligned drafts vs SFT drafts)."""

from __future__ import annotations

import typer

from cowest.cli.common import OverridesArg, OverwriteOpt, RecipeArg, load_cli_config


def validate(
    recipe: RecipeArg = None,
    overrides: OverridesArg = None,
    overwrite: OverwriteOpt = False,
    round_: int = typer.Option(1, "--round", min=1, help="Which align round's model to validate."),
) -> None:
    """On align.validation_questions training-split questions outside SFT, feedback and DPO (never the eval
    split): the strong model refines one SFT draft and one aligned draft per question; the gain is E(aligned)
    − E(SFT) under the run's feedback evaluator (and the task's metric), with a paired 95% CI and the
    smallest detectable difference. Writes runs/<name>/validation/round<r>/; resumes without paying twice.
    Tune on this number, never on the eval split.

    Examples:

        cowest validate recipes/medmcqa_cpu.yaml

        cowest validate recipes/demo.yaml align.validation_questions=24

        cowest validate recipes/ifqa_cpu.yaml --round 2
    """
    cfg = load_cli_config(recipe, overrides)
    from cowest.feedback.validate import run_validation
    from cowest.rundir import RunDir

    RunDir(cfg).create()
    run_validation(cfg, round_, overwrite=overwrite)
    print(f"validation: {RunDir(cfg).validation(round_) / 'validation.json'}")
