"""Shared CLI pieces: the recipe argument, ``key=value`` overrides, and config loading."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cowest.config import RunConfig, load_config

RecipeArg = Annotated[
    Optional[str], typer.Argument(help="YAML recipe (see recipes/). Omit to use the defaults.", show_default=False)
]
OverridesArg = Annotated[
    Optional[list[str]],
    typer.Argument(help="Overrides as dotted key=value, e.g. task.n_eval=50 strong.max_concurrency=4.", show_default=False),
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Redo stages whose outputs were made with a different config.")
]


def load_cli_config(recipe: str | Path | None, overrides: list[str] | None) -> RunConfig:
    """Load a recipe; a lone ``key=value`` in the recipe slot is treated as an override."""
    overrides = list(overrides or [])
    if recipe is not None and "=" in str(recipe) and not Path(recipe).exists():
        overrides.insert(0, str(recipe))
        recipe = None
    return load_config(Path(recipe) if recipe is not None else None, overrides)
