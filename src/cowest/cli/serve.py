"""``cowest serve``: the trained collaboration as one OpenAI-compatible model."""

from __future__ import annotations

from cowest.cli.common import OverridesArg, RecipeArg
from cowest.errors import CowestError


def serve(recipe: RecipeArg = None, overrides: OverridesArg = None) -> None:
    """Serve weak draft -> strong refine behind /v1/chat/completions (not built yet)."""
    raise CowestError("`cowest serve` is not built yet in this version")
