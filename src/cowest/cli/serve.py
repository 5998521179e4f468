"""``cowest serve``: the trained collaboration as one OpenAI-compatible model."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cowest.cli.common import OverridesArg, RecipeArg, load_cli_config


def recipe_names_task(recipe: Path | None, overrides: list[str] | None) -> bool:
    """True when the recipe file or an override sets ``task`` (else the served prompt is generic)."""
    import yaml

    items = list(overrides or [])
    if recipe is not None and "=" in str(recipe) and not Path(recipe).exists():
        items.append(str(recipe))
        recipe = None
    if any(o.split("=", 1)[0].strip().split(".")[0] == "task" for o in items):
        return True
    if recipe is None or not Path(recipe).is_file():
        return False
    data = yaml.safe_load(Path(recipe).read_text(encoding="utf-8")) or {}
    return isinstance(data, dict) and "task" in data


def _flag(name: str, help_: str, default: str) -> Any:
    """A flag that overrides ``serve.<key>`` of the recipe (its default shown in the help)."""
    key = name.split("/")[0].removeprefix("--").replace("-", "_")
    key = "shutdown_timeout_s" if key == "shutdown_timeout" else key
    return typer.Option(name, help=f"{help_} (recipe: serve.{key}, default {default})", show_default=False)


def serve(
    recipe: RecipeArg = None,
    overrides: OverridesArg = None,
    host: Annotated[Optional[str], _flag("--host", "Interface to listen on.", "127.0.0.1")] = None,
    port: Annotated[Optional[int], _flag("--port", "TCP port; 0 picks a free one (printed at start).", "8000")] = None,
    api_key_env: Annotated[Optional[str], _flag(
        "--api-key-env", "Require 'Authorization: Bearer <key>' with the key held in this environment variable.",
        "none")] = None,
    max_concurrency: Annotated[Optional[int], _flag(
        "--max-concurrency", "Collaborations in progress at once.", "strong.max_concurrency")] = None,
    max_queue: Annotated[Optional[int], _flag(
        "--max-queue", "Requests that may wait for a slot; more get 429.", "4 x concurrency")] = None,
    max_body_bytes: Annotated[Optional[int], _flag("--max-body-bytes", "Larger request bodies get 413.", "1048576")] = None,
    show_draft: Annotated[Optional[bool], _flag(
        "--show-draft/--no-show-draft", "Return the weak model's draft with every response (else only when the "
        "request asks).", "false")] = None,
    model_name: Annotated[Optional[str], _flag("--model-name", "The model id clients send.", "the run's name")] = None,
    prompt: Annotated[Optional[str], _flag(
        "--prompt", "auto: the task's prompts when the recipe names a task, else generic | task | generic.", "auto")] = None,
    shutdown_timeout: Annotated[Optional[float], _flag(
        "--shutdown-timeout", "Seconds in-flight requests get to finish after SIGTERM/Ctrl-C.", "60")] = None,
    log_level: Annotated[Optional[str], _flag("--log-level", "uvicorn log level.", "info")] = None,
    gate: Annotated[Optional[bool], _flag(
        "--gate/--no-gate", "Answer a request with the weak draft alone when it passes the run's calibrated "
        "confidence gate (gate/gate.json, made by `cowest calibrate`); the rest collaborate.", "false")] = None,
) -> None:
    """Serve weak draft -> strong refine as ONE model behind /v1/chat/completions.

    The weak model is the run's aligned adapter if there is one, else its SFT adapter, else the base
    model. Every option is also a key of the recipe's ``serve:`` section; a flag wins. Examples:

        cowest serve recipes/medmcqa_cpu.yaml --port 8000

        COWEST_SERVE_KEY=secret cowest serve recipes/medmcqa_paper.yaml --api-key-env COWEST_SERVE_KEY

    Then any OpenAI client works: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="secret"),
    with extra_body={"cowest": {"return_draft": True}} to see the draft. With --gate, a confident draft is
    the answer (no strong call) and every response's "cowest" object says which route it took.
    """
    # without the [serve] extra this import fails; cowest.cli.main turns that into a one-line error
    from cowest.serve.app import ServeOptions
    from cowest.serve.runner import read_api_key, run_server

    cfg = load_cli_config(recipe, overrides)
    flags = {"host": host, "port": port, "api_key_env": api_key_env, "max_concurrency": max_concurrency,
             "max_queue": max_queue, "max_body_bytes": max_body_bytes, "show_draft": show_draft,
             "model_name": model_name, "prompt": prompt, "shutdown_timeout_s": shutdown_timeout, "log_level": log_level,
             "gate": gate}
    s = dataclasses.replace(cfg.serve, **{k: v for k, v in flags.items() if v is not None})  # checks the values
    cfg = dataclasses.replace(cfg, serve=s)
    conc = s.max_concurrency or cfg.strong.max_concurrency
    use_task = recipe_names_task(recipe, overrides) if s.prompt == "auto" else s.prompt == "task"
    opts = ServeOptions(
        model_name=s.model_name, api_key=read_api_key(s.api_key_env), max_concurrency=conc,
        max_queue=4 * conc if s.max_queue is None else s.max_queue, max_body_bytes=s.max_body_bytes,
        show_draft=s.show_draft, use_task=use_task,
    )
    if s.gate:
        from cowest.serve.weak import serving_gate

        opts.gate = serving_gate(cfg, use_task=use_task)
    run_server(cfg, opts, host=s.host, port=s.port, shutdown_timeout_s=s.shutdown_timeout_s, log_level=s.log_level)
