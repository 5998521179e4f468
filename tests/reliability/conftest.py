"""Shared pieces of the pipeline reliability tests: CLI argument lists for `cowest eval` / `cowest feedback`
on the tiny weak model and the demo task, a ready "SFT" model for feedback, and the report writer.

Set ``COWEST_RELIABILITY_REPORT=<dir>`` to also write each printed table to ``<dir>/<name>.md``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cowest.training import FULL_MODEL_MARKER

N_EVAL = 12
EVAL_SYSTEMS = "[strong,collab]"


def eval_args(root: Path, name: str, tiny: Path, base_url: str, *extra: str) -> list[str]:
    """`cowest eval` on 12 demo questions, systems strong and collab, the tiny weak model."""
    return [
        "eval", "task.name=demo", f"task.n_eval={N_EVAL}", f"output_dir={root}", f"name={name}",
        f"weak.model={tiny}", "weak.max_new_tokens=8", f"eval.systems={EVAL_SYSTEMS}",
        f"strong.base_url={base_url}", "strong.api_key_env=null", *extra,
    ]


def feedback_args(root: Path, name: str, tiny: Path, base_url: str, *extra: str, n_train: int = 6) -> list[str]:
    """`cowest feedback` on ``n_train`` demo training questions, K=2 drafts each (metric evaluator)."""
    return [
        "feedback", "task.name=demo", f"task.n_train={n_train}", f"output_dir={root}", f"name={name}",
        f"weak.model={tiny}", "weak.max_new_tokens=8", "weak.batch_size=8", "feedback.k=2",
        f"strong.base_url={base_url}", "strong.api_key_env=null", *extra,
    ]


def with_sft_model(run_dir: Path, tiny: Path) -> Path:
    """Give a run an SFT weak model without training: the tiny model as a full fine-tuned model
    (``sft.lora=false`` layout), which `cowest feedback` drafts with."""
    dest = run_dir / "sft" / "adapter"
    if not dest.exists():
        shutil.copytree(tiny, dest)
        (dest / FULL_MODEL_MARKER).write_text(json.dumps({"kind": "full_model", "note": "reliability test"}))
    return run_dir


def report(name: str, text: str) -> None:
    """Print a result table (visible with ``pytest -s``) and optionally save it."""
    print(f"\n== {name} ==\n{text}\n", flush=True)
    out = os.environ.get("COWEST_RELIABILITY_REPORT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.md").write_text(text + "\n", encoding="utf-8")


def demo_ids(split: str, n: int, seed: int = 0) -> list[str]:
    """The ids a run with ``task.n_<split>=n`` works on (the seeded subsample)."""
    from cowest.config import load_config
    from cowest.tasks import get_task, subsample

    task = get_task(load_config(None, ["task.name=demo"]).task)
    return [ex.id for ex in subsample(task.load(split), n, seed)]


@pytest.fixture(scope="session")
def tiny(tiny_model_dir) -> Path:
    return Path(tiny_model_dir)
