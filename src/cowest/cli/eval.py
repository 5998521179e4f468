"""``cowest eval``: compare systems side by side on the task's eval split."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cowest.cli.common import OverridesArg, OverwriteOpt, RecipeArg, load_cli_config


def eval_(
    recipe: RecipeArg = None,
    overrides: OverridesArg = None,
    systems: Annotated[
        Optional[str], typer.Option("--systems", help="Comma-separated subset of weak,strong,superICL,collab,cowest.")
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Run systems (weak, strong, superICL, collab, cowest) on the same questions and write the table.

    Examples:

        cowest eval recipes/demo.yaml

        cowest eval recipes/medmcqa_cpu.yaml task.n_eval=100 --systems strong,collab
    """
    cfg = load_cli_config(recipe, overrides)
    if systems:
        from cowest.config import EvalConfig

        cfg.eval = EvalConfig(systems=[s.strip() for s in systems.split(",") if s.strip()])
    from cowest.eval.evaluate import run_eval

    run_eval(cfg, overwrite=overwrite)
