"""Drafts that run on past their answer line, and what they cost: a DPO side effect on a small weak model.

    python bench/repeats.py RUN_DIR [--round 1]

A draft with more than one ``Answer:`` line did not stop after its answer (:func:`cowest.chat.answer_line_count`).
Counts them among the SFT and aligned drafts of the run's validation (held-out training questions) and among the
collab (SFT) and cowest (aligned) drafts of its eval, and splits cowest − collab (primary metric, summed over
questions) into the questions where the aligned draft repeats and the rest. Reads the run's files; no model call.
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run directory (runs/<name>)")
    ap.add_argument("--round", type=int, default=1)
    a = ap.parse_args(argv)
    res = repeats(a.run, a.round)
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
