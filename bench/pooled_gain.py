"""One aligned model's alignment gain, pooled over validations on disjoint held-out questions.

    python bench/pooled_gain.py RUN_DIR RUN_DIR [...] [--round 1]

Each RUN_DIR validated the same SFT and aligned adapters (their stages' recorded fingerprints agree) on other
held-out training questions: e.g. a sweep's base variant validated once right after ``task.n_train`` and once
from ``task.heldout_from`` (bench/sweep.py pins it when its variants train on different numbers of questions).
Pooled, n is the sum, so a smaller true gain is detectable. Refuses runs whose adapters differ or whose questions
overlap. Reads the runs' files; no model call.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def pooled_gain(runs: list[Path], round_: int = 1) -> dict[str, Any]:
    from cowest.feedback.validate import summarise
    from cowest.io import read_jsonl
    from cowest.rundir import done_fingerprint

    adapters = {(done_fingerprint(r / "sft"), done_fingerprint(r / "align" / f"round{round_}")) for r in runs}
    if len(adapters) != 1 or None in next(iter(adapters)):
        raise SystemExit(f"the runs did not validate the same finished SFT and round-{round_} adapters: "
                         f"{sorted(map(str, adapters))}")
    parts, seen = [], set()
    for r in runs:
        vdir = r / "validation" / f"round{round_}"
        if not (vdir / "validation.json").exists():
            raise SystemExit(f"{r}: no finished validation of round {round_} ({vdir / 'validation.json'})")
        rows = read_jsonl(vdir / "records.jsonl")
        ids = {x["id"] for x in rows}
        if ids & seen:
            raise SystemExit(f"{r}: {len(ids & seen)} of its questions are in an earlier run's validation: pool "
                             "validations on disjoint questions only")
        seen |= ids
        v = json.loads((vdir / "validation.json").read_text())
        parts.append({"run": str(r), "n": len(rows), "gain": v["gain"], "metric_gain": v["metric_gain"],
                      "evaluator": v["evaluator"], "metric": v["metric"], "rows": rows})
    out: dict[str, Any] = {"runs": [{k: p[k] for k in p if k != "rows"} for p in parts]}
    rows = [x for p in parts for x in p["rows"]]
    # the validation stage's own summary of the pooled records: the same CIs, detectable Δ and unscored-row rule
    s = summarise(rows, round_=round_, asked=len(rows), evaluator=parts[0]["evaluator"], metric=parts[0]["metric"],
                  paid={})
    out.update({k: s[k] for k in ("gain", "metric_gain", "n", "evaluator", "metric")},
               gain_detectable=s["detectable"], metric_gain_detectable=s["metric_detectable"])
    return out


def _ci(c: list[float]) -> str:
    return f"{c[0]:+.1f} [{c[1]:+.1f}, {c[2]:+.1f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--round", type=int, default=1)
    a = p.parse_args(argv)
    res = pooled_gain(a.runs, a.round)
    print(f"| validation | n | gain, {res['evaluator']} pts [95% CI] | gain, {res['metric']} pts [95% CI] |")
    print("|---|---|---|---|")
    for r in res["runs"]:
        print(f"| {r['run']} | {r['n']} | {_ci(r['gain'])} | {_ci(r['metric_gain'])} |")
    print(f"| **pooled** | {res['n']} | {_ci(res['gain'])} (±{res['gain_detectable']:.1f}) | "
          f"{_ci(res['metric_gain'])} (±{res['metric_gain_detectable']:.1f}) |")
    print(json.dumps({k: v for k, v in res.items() if k != "runs"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
