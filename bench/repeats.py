"""Drafts that run on past their answer line, and what they cost: a DPO side effect on a small weak model.

    python bench/repeats.py RUN_DIR [--round 1]

A draft with more than one ``Answer:`` line did not stop after its answer (:func:`cowest.chat.answer_line_count`).
Counts them among the SFT and aligned drafts of the run's validation (held-out training questions) and among the
collab (SFT) and cowest (aligned) drafts of its eval, and splits cowest − collab (primary metric, summed over
questions) into the questions where the aligned draft repeats and the rest. Reads the run's files; no model call.

    python bench/repeats.py RUN_DIR --ask-cut

also asks the strong model again (the run's endpoint and cache, eval decoding) with each repeating aligned
validation draft cut after its first answer line, and compares the three on those questions: SFT draft, aligned
draft as written, aligned draft cut. It tells whether running on past the answer is what costs the strong
model, or whether those are simply the hard questions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def repeats(run: Path, round_: int = 1) -> dict[str, Any]:
    from cowest.chat import answer_line_count
    from cowest.feedback.validate import repeating_drafts
    from cowest.io import read_jsonl as rows

    out: dict[str, Any] = {}
    val = run / "validation" / f"round{round_}" / "records.jsonl"
    if val.exists():
        v = rows(val)
        out["validation"] = {side: [k, len(v)] for side, k in repeating_drafts(v).items()}
    preds = run / "eval" / "predictions"
    if (preds / "collab.jsonl").exists() and (preds / "cowest.jsonl").exists():
        p = {s: {r["id"]: r for r in rows(preds / f"{s}.jsonl")} for s in ("collab", "cowest")}
        metric = json.loads((run / "eval" / "metrics.json").read_text())["primary_metric"]
        ids = set(p["collab"]) & set(p["cowest"])
        rep = {i for i in ids if answer_line_count(p["cowest"][i]["weak_draft"]) > 1}
        out["eval"] = {"metric": metric, "n": len(ids),
                       "repeating": {s: sum(answer_line_count(p[s][i]["weak_draft"]) > 1 for i in ids) for s in p}}
        for name, part in (("aligned draft repeats", rep), ("the rest", ids - rep)):
            out["eval"][name] = {"n": len(part), **{s: sum(p[s][i]["scores"][metric] for i in part) for s in p}}
    return out


def cut_after_answer(text: str) -> str:
    """``text`` up to and including its first line that starts with ``Answer:`` (all of it if none does)."""
    from cowest.chat import answer_line_count

    lines = text.splitlines()
    for i, line in enumerate(lines):
        if answer_line_count(line):
            return "\n".join(lines[:i + 1])
    return text


def ask_cut(run: Path, round_: int = 1) -> dict[str, Any]:
    """The repeating aligned validation drafts, cut after their first answer line and refined again."""
    from cowest.chat import answer_line_count
    from cowest.config import load_config
    from cowest.endpoint import open_strong
    from cowest.feedback.evaluators import Evaluator
    from cowest.inference.prompts import collab_messages
    from cowest.io import read_jsonl
    from cowest.models.strong import ChatRequest
    from cowest.stats import paired_bootstrap
    from cowest.tasks import get_task

    cfg = load_config(str(run / "config.yaml"), [])
    task = get_task(cfg.task)
    examples = {ex.id: ex for ex in task.load(cfg.task.train_split)}
    rows = [r for r in read_jsonl(run / "validation" / f"round{round_}" / "records.jsonl")
            if answer_line_count(r["aligned"]["draft"]) > 1]
    exs = [examples[str(r["id"])] for r in rows]
    cut = [cut_after_answer(r["aligned"]["draft"]) for r in rows]
    reqs = [ChatRequest(messages=collab_messages(task, ex, d, cfg.task.format)) for ex, d in zip(exs, cut)]
    with open_strong(cfg, stage="bench_repeats") as client:
        outs = [res.text for res in client.chat_batch(reqs, tag="bench_repeats_cut", desc="strong + cut draft")]
    ev = Evaluator("metric", metric=cfg.feedback.metric)
    scored = ev.score(task, list(zip(exs, outs)))
    sides = {"sft": [r["sft"]["score"] for r in rows], "aligned": [r["aligned"]["score"] for r in rows],
             "aligned_cut": [s.metric for s in scored]}
    em = {"sft": [r["sft"]["metric"] for r in rows], "aligned": [r["aligned"]["metric"] for r in rows],
          "aligned_cut": [float(task.item_scores(s.answer, ex)[task.primary_metric]) for s, ex in zip(scored, exs)]}
    mean = {k: round(100 * sum(v) / len(v), 1) if v else None for k, v in sides.items()}
    return {"n": len(rows), "score_mean": mean, "primary_metric": task.primary_metric,
            "primary_mean": {k: round(100 * sum(v) / len(v), 1) if v else None for k, v in em.items()},
            "cut_minus_aligned": paired_bootstrap(sides["aligned_cut"], sides["aligned"]) if rows else None,
            "cut_minus_sft": paired_bootstrap(sides["aligned_cut"], sides["sft"]) if rows else None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run directory (runs/<name>)")
    ap.add_argument("--round", type=int, default=1)
    ap.add_argument("--ask-cut", action="store_true", help="re-ask the strong model with repeating drafts cut")
    a = ap.parse_args(argv)
    res = repeats(a.run, a.round)
    if a.ask_cut:
        res["cut"] = ask_cut(a.run.resolve(), a.round)
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
