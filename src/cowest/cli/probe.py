"""``cowest probe``: candidate strong endpoints on a trained run's dev drafts, side by side."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cowest.cli.common import OverridesArg, OverwriteOpt, RecipeArg, load_cli_config


def probe(
    recipe: RecipeArg = None,
    overrides: OverridesArg = None,
    endpoint: Annotated[
        Optional[list[str]],
        typer.Option("--endpoint", "-e", show_default=False,
                     help="A candidate strong model, repeatable: NAME (the recipe's strong section) or "
                          "NAME=KEY=VALUE[,KEY=VALUE...] overriding keys of the strong section "
                          "(e.g. q15=strong.max_tokens=192). Names must be unique."),
    ] = None,
    questions: Annotated[int, typer.Option("--questions", "-n", min=1,
                                           help="Held-out training questions to draft and ask.")] = 64,
    overwrite: OverwriteOpt = False,
) -> None:
    """Candidate strong endpoints on the run's dev drafts: accuracy, correction and corruption rates, cost.

    Per endpoint: strong-alone and collaboration accuracy, correction and corruption rates (95% CIs), the paired difference in collaboration accuracy against the first endpoint, calls, tokens and cost.

    The drafts (held-out training questions, never the eval split) are made once by the model the run would serve and shared; rows are kept per endpoint and question, so a rerun or an added endpoint pays only for what is new. Writes runs/<name>/probe/: drafts.jsonl, <endpoint>/strong.jsonl and collab.jsonl, probe.json, probe.md, probe.png.

    Examples:

        cowest probe recipes/ifqa_cpu.yaml --endpoint base --endpoint t192=strong.max_tokens=192

        cowest probe recipes/ifqa_cpu.yaml -n 64 --endpoint q15 \\
            --endpoint smol=strong.local.gguf=offline:smollm2-135m-instruct
    """
    cfg = load_cli_config(recipe, overrides)
    from cowest.eval.probe import parse_endpoint, run_probe

    run_probe(cfg, [parse_endpoint(s) for s in endpoint or []], questions=questions, overwrite=overwrite)
