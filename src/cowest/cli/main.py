"""The ``cowest`` command line.

    cowest demo                                   # the whole method on the embedded offline task
    cowest run recipes/medmcqa_cpu.yaml           # sft -> feedback -> align -> eval
    cowest sft | feedback | align | validate | eval RECIPE [key=value ...]
    cowest score --task ifqa --split dev preds.jsonl
    cowest calibrate RECIPE                       # the confidence gate (which drafts need the strong model)
    cowest probe RECIPE --endpoint A --endpoint B=strong.max_tokens=192   # choose the strong model
    cowest serve RECIPE                           # the trained collaboration as one OpenAI-style model
    cowest env                                    # versions, devices, offline models

User errors (bad config, bad data, unreachable endpoint) print one line and exit with code 2;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from cowest.errors import CowestError

app = typer.Typer(
    name="cowest",
    help="Weak-strong LLM collaboration aligned by collaborative preferences (CoWest).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks.")) -> None:
    if debug:
        os.environ["COWEST_DEBUG"] = "1"


# Modules of the optional extras (pyproject.toml): a command that needs a missing one says which extra to
# install when it runs, instead of failing with a traceback (or vanishing from --help).
OPTIONAL_MODULES = {"starlette": "serve", "uvicorn": "serve", "pydantic": "serve", "vllm": "vllm",
                    "deepspeed": "deepspeed", "llama_cpp": "local"}


def missing_extra(e: ModuleNotFoundError, command: str) -> str | None:
    """The one-line message for a missing optional dependency, or None when ``e`` is not one."""
    module = (e.name or "").split(".")[0]
    extra = OPTIONAL_MODULES.get(module)
    if extra is None:
        return None
    return (f"cowest {command} needs {module!r} (the [{extra}] extra), which is not installed: "
            f"pip install 'cowest[{extra}]'")


def _register() -> None:
    # Each subcommand lives in its own module; importing them is cheap (heavy imports are inside).
    from cowest.cli import align, calibrate, demo, env, eval as eval_cmd, feedback, probe, run, serve, sft, validate

    app.command("demo")(demo.demo)
    app.command("run")(run.run)
    app.command("sft")(sft.sft)
    app.command("feedback")(feedback.feedback)
    app.command("align")(align.align)
    app.command("validate")(validate.validate)
    app.command("eval")(eval_cmd.eval_)
    app.command("probe")(probe.probe)
    app.command("score")(score_cmd)
    app.command("calibrate")(calibrate.calibrate)
    app.command("serve")(serve.serve)
    app.command("env")(env.env)


def score_cmd(
    predictions: Path = typer.Argument(..., help="JSONL with one {\"id\": ..., \"prediction\": \"free text\"} per line."),
    task: str = typer.Option(..., "--task", help="ifqa | medmcqa | prosocial_dialog | jsonl | demo"),
    split: str = typer.Option("dev", "--split"),
    data: Optional[str] = typer.Option(None, "--data", help="Local dir or file with the task's data (default: the hub)."),
) -> None:
    """Score free-text predictions against a task split; prints JSON on stdout.

    Example:

        cowest score --task medmcqa --split dev --data ../shared/data/medmcqa preds.jsonl
    """
    import json

    from cowest.cli.score import run_score

    print(json.dumps(run_score(task, split, data, predictions)))


def _command(argv: list[str] | None) -> str:
    args = argv if argv is not None else sys.argv[1:]
    return next((a for a in args if not a.startswith("-")), "")


def end_distributed() -> None:
    """Under ``accelerate launch``: wait for every rank, then tear the process group down before exit.

    A rank that returned early (only rank 0 writes metrics and plots) and left the group to interpreter
    teardown died with SIGABRT ("terminate called without an active exception") in gloo's destructor, so the
    launch failed after a finished run. Only on success: after an error the other ranks may never arrive.
    """
    dist = sys.modules.get("torch.distributed")  # not imported: no group to end (and no torch import for it)
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    dist.barrier()
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    _register()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or os.environ.get("COWEST_DEBUG") == "1"
    try:
        app(args=argv, standalone_mode=False)
        end_distributed()
    except CowestError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except ModuleNotFoundError as e:
        msg = None if debug else missing_extra(e, _command(argv))
        if msg is None:
            raise
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished items are saved; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors come through here in non-standalone mode
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(2)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(130)
        if debug:
            raise
        print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)
