"""``cowest run``: sft -> feedback -> align -> eval from one recipe."""

from __future__ import annotations

from cowest.cli.common import OverridesArg, OverwriteOpt, RecipeArg, load_cli_config


def run(recipe: RecipeArg = None, overrides: OverridesArg = None, overwrite: OverwriteOpt = False) -> None:
    """Run every stage of the method; finished stages with the same config are skipped.

    Examples:

        cowest run recipes/medmcqa_cpu.yaml

        cowest run recipes/ifqa_cpu.yaml task.n_train=200 feedback.k=4 rounds=2
    """
    cfg = load_cli_config(recipe, overrides)
    from cowest.pipeline import run_all

    run_all(cfg, overwrite=overwrite)
