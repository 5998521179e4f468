"""``cowest eval``: compare systems side by side on the task's eval split."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cowest.cli.common import OverridesArg, OverwriteOpt, RecipeArg, load_cli_config


def eval_(
    recipe: RecipeArg = None,
    overrides: OverridesArg = None,
    systems: Annotated[
        Optional[str], typer.Option("--systems", help="Comma-separated subset of weak,strong,superICL,collab,cowest,routed,random_gate "
                                           "(default: eval.systems, the first five).")
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Run systems (weak, strong, superICL, collab, cowest) on the same questions and write the table.

    routed (the confidence gate + CoWest, calibrated on held-out training questions: the gate section) and
    random_gate (the same share sent at random) add the routing curve, APGR and CPT to the report.

    Examples:

        cowest eval recipes/demo.yaml

        cowest eval recipes/medmcqa_cpu.yaml task.n_eval=100 --systems strong,collab

        cowest eval recipes/medmcqa_cpu.yaml --systems weak,cowest,routed,random_gate gate.strong_share=0.3
    """
    cfg = load_cli_config(recipe, overrides)
    if systems:
        from cowest.config import EvalConfig

        cfg.eval = EvalConfig(systems=[s.strip() for s in systems.split(",") if s.strip()])
    from cowest.eval.evaluate import run_eval

    run_eval(cfg, overwrite=overwrite)
