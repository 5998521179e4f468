"""``cowest score``: score a file of free-text predictions against a task split.

The predictions file is JSON Lines, one ``{"id": ..., "prediction": "free text"}`` per example (ids
may be numbers or strings; they are compared as strings). Each prediction is parsed by the task, so
raw model outputs can be scored directly. Metrics cover the examples that have a prediction;
examples without one are listed under ``missing``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cowest.config import TaskConfig
from cowest.errors import DataError
from cowest.io import iter_jsonl, write_json
from cowest.tasks import get_task


def read_predictions(path: Path, known_ids: set[str]) -> dict[str, str | None]:
    """id -> raw prediction text. Unknown or repeated ids and malformed rows are DataErrors at file:line."""
    out: dict[str, str | None] = {}
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        if "id" not in row or row["id"] is None or isinstance(row["id"], (bool, list, dict, float)):
            raise DataError(f"{where}: each line needs an 'id' (string or integer)")
        if "prediction" not in row:
            raise DataError(f"{where}: missing field 'prediction'")
        text = row["prediction"]
        if text is not None and not isinstance(text, str):
            raise DataError(f"{where}: 'prediction' must be a string or null, got {type(text).__name__}")
        ident = str(row["id"])
        if ident not in known_ids:
            raise DataError(f"{where}: id {ident!r} is not in the split")
        if ident in out:
            raise DataError(f"{where}: duplicate id {ident!r}")
        out[ident] = text
    return out


def score(task_cfg: TaskConfig, split: str, predictions_path: Path) -> dict[str, Any]:
    """Parse and score every prediction; see the module docstring for the file format."""
    task = get_task(task_cfg)
    examples = task.load(split)
    predictions_path = Path(predictions_path)
    preds = read_predictions(predictions_path, {ex.id for ex in examples})
    if not preds:
        raise DataError(f"{predictions_path}: no predictions")
    scored = [ex for ex in examples if ex.id in preds]
    parsed = [
        task.parse_answer(preds[ex.id], example=ex) if preds[ex.id] is not None else None  # type: ignore[call-arg]
        for ex in scored
    ]
    return {
        "task": task_cfg.name,
        "split": split,
        "n": len(scored),
        "metrics": task.score(parsed, scored),
        "missing": [ex.id for ex in examples if ex.id not in preds],
        "unparsed": sum(p is None for p in parsed),
    }


def run_score(task: str, split: str, data: str | None, predictions: Path) -> dict[str, Any]:
    """The CLI's entry point: score ``predictions`` for task ``task`` (data dir/file, or None)."""
    return score(TaskConfig(name=task, data=data), split, Path(predictions))


def format_result(result: dict[str, Any]) -> str:
    """One human-readable line, e.g. 'medmcqa/dev n=100: accuracy 71.00, macro_f1 58.20 (3 unparsed)'."""
    metrics = ", ".join(f"{k} {v:.2f}" for k, v in result["metrics"].items())
    extra = [f"{result['unparsed']} unparsed"] if result["unparsed"] else []
    if result["missing"]:
        extra.append(f"{len(result['missing'])} missing")
    tail = f" ({', '.join(extra)})" if extra else ""
    return f"{result['task']}/{result['split']} n={result['n']}: {metrics}{tail}"


def main_score(
    task: str, split: str, data: str | None, predictions: Path, output: Path | None = None, as_json: bool = False
) -> dict[str, Any]:
    """Score, print the result (one line, or JSON with ``as_json``), optionally save it as JSON."""
    result = run_score(task, split, data, predictions)
    print(json.dumps(result, indent=2) if as_json else format_result(result))
    if output is not None:
        write_json(output, result)
    return result
