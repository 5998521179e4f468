"""Metric evaluators compared on one finished feedback round, without a model call (issue 13's evaluator table).

    python bench/evaluators.py RUN_DIR [--round 1]

Rescores the round's recorded strong answers (z and every draft's collaboration) with each metric evaluator the
task has: ``auto`` (the task's graded reward: token F1 for free-form answers, correctness for choices) and each
per-item score (``em``, ``f1``, ``accuracy``). For each: the share of drafts with Δ = 0 (no signal), questions
with pairs, pairs per question, and strong requests per pair (z + distinct drafts, the same answers for every
metric) under the run's pairing rule, and what the pairs teach: the share whose chosen draft's own answer
scores better than, as well as, or worse than the rejected draft's (``pair_signal``). The run's own evaluator is
the first row, as recorded. The judge and
likelihood evaluators need new calls: compare them with ``bench/sweep.py``'s ``judge``/``likelihood`` variants.
Writes ``evaluators.json`` and ``evaluators.md`` into the feedback round's directory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, md_table, now_utc, write_json  # noqa: E402


def rescored(records: list[dict[str, Any]], task: Any, examples: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    """The records with z, collab scores and Δ recomputed by the ``metric`` evaluator (no calls)."""
    from cowest.feedback.collect import deltas_and_labels, draft_scores
    from cowest.feedback.evaluators import Evaluator

    ev = Evaluator("metric", metric=metric)
    out = []
    for r in records:
        ex = examples[str(r["id"])]
        z = [s.score for s in ev.score(task, [(ex, t) for t in r["z_outputs"]])]
        c = [s.score for s in ev.score(task, [(ex, t) for t in r["collab_outputs"]])]
        out.append({**r, **deltas_and_labels(z, c), "draft_scores": draft_scores(r["draft_answers"], task, ex, ev)})
    return out


def figures(records: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
    from cowest.feedback.collect import evaluator_figures
    from cowest.feedback.pairs import make_pairs, outcomes, pair_signal

    fb = cfg.feedback
    pairs = make_pairs(records, fb.pairing, fb.min_margin, fb.max_pairs_per_question, fb.max_pairs, cfg.seed)
    present = [d for r in records for d in r["deltas"] if d is not None]
    f = evaluator_figures(records, present, len(pairs), {})
    return {"drafts": len(present), "delta_zero_share": f["delta_zero_share"],
            "questions_with_pairs": outcomes(records, fb.pairing, fb.min_margin)["paired"], "pairs": len(pairs),
            "pairs_per_question": f["pairs_per_question"], "strong_requests_per_pair": f["per_pair"]["strong_requests"],
            "mean_z": _mean([r["z_mean"] for r in records]),
            "mean_collab": _mean([s for r in records for s in r["collab_scores"]]),
            "pair_signal": pair_signal(records, pairs)}


def compare(run_dir: Path, round_: int = 1) -> dict[str, Any]:
    from cowest.config import load_config
    from cowest.feedback.collect import with_draft_scores
    from cowest.io import read_jsonl
    from cowest.tasks import get_task

    cfg = load_config(str(run_dir / "config.yaml"), [])
    stage = run_dir / "feedback" / f"round{round_}"
    if not (stage / ".done.json").exists():
        raise SystemExit(f"{stage}: feedback round {round_} has not finished")
    records = read_jsonl(stage / "records.jsonl")
    task = get_task(cfg.task)
    examples = {ex.id: ex for ex in task.load(cfg.task.train_split)}
    own = json.loads((stage / "feedback_stats.json").read_text())
    # records made before feedback scored the drafts' own answers get them here, as a rerun of the stage would
    records = with_draft_scores(records, task, list(examples.values()), cfg.feedback.metric)
    rows = [{"evaluator": f"{cfg.feedback.evaluator} ({cfg.feedback.metric}), as run", **figures(records, cfg),
             "strong_calls_paid_per_pair": own.get("per_pair", {}).get("strong_calls_paid")}]
    names = ["auto", *task.item_scores(None, next(iter(examples.values())))]
    for m in dict.fromkeys(names):
        rows.append({"evaluator": f"metric ({m})", **figures(rescored(records, task, examples, m), cfg)})
    res = {"date": now_utc(), "run": str(run_dir), "round": round_, "task": cfg.task.name,
           "questions": len(records), "pairing": cfg.feedback.pairing, "rows": rows}
    write_json(stage / "evaluators.json", res)
    (stage / "evaluators.md").write_text(table(res) + "\n", encoding="utf-8")
    return res


def table(res: dict[str, Any]) -> str:
    head = ["evaluator", "drafts", "Δ = 0", "questions with pairs", "pairs", "pairs / question",
            "strong requests / pair", "mean E(z)", "mean E(collab)", "pairs whose chosen draft answers better / as well / worse"]
    rows = [[r["evaluator"], r["drafts"], _pct(r["delta_zero_share"]), f"{r['questions_with_pairs']}/{res['questions']}",
             r["pairs"], r["pairs_per_question"], r["strong_requests_per_pair"], r["mean_z"], r["mean_collab"],
             _signal(r.get("pair_signal"))] for r in res["rows"]]
    return md_table(head, rows)


def _signal(sig: dict[str, Any] | None) -> str:
    """Pair shares by the drafts' own answers (the metric of the row, or the run's own for a judge/likelihood run)."""
    if not sig or not sig["pairs"]:
        return "–"
    n = sig["pairs"]
    return " / ".join(f"{100 * sig[k] / n:.0f}%" for k in ("chosen_answers_better", "as_well", "chosen_answers_worse"))


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _mean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return round(sum(vals) / len(vals), 3) if vals else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--round", type=int, default=1)
    a = p.parse_args(argv)
    run_dir = a.run_dir.resolve()
    os.chdir(ROOT)  # the recipes' data paths are relative to the project root
    res = compare(run_dir, a.round)
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
