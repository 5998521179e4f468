"""One system against another on a slice of a finished eval's questions: the paired difference, its CI and the
smallest difference the slice could detect.

    python bench/eval_slice.py bench/out/quality/medmcqa-large-dev1000/runs/medmcqa-large --from 200
    python bench/eval_slice.py RUN --a cowest --b collab --from 0 --to 200 --metric accuracy

For an eval extended to more questions after a first look (``task.n_eval`` raised): the questions after the ones
already seen (``--from``) are the fresh part, and this reports them alone. Reads ``eval/predictions/<system>.jsonl``
(one line per question, in the eval's order) and pairs the two systems by question id.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def scores(run: Path, system: str, metric: str | None) -> tuple[list[str], dict[str, float], str]:
    from cowest.errors import DataError
    from cowest.io import iter_jsonl

    path = run / "eval" / "predictions" / f"{system}.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: no predictions for {system!r} (systems here: "
                         f"{', '.join(sorted(p.stem for p in path.parent.glob('*.jsonl')))})")
    order, by_id = [], {}
    try:
        rows = list(iter_jsonl(path))  # a malformed line: DataError naming file and line
    except DataError as e:
        raise SystemExit(str(e)) from None
    for n, row in rows:
        metric = metric or next(iter(row["scores"]))
        if metric not in row["scores"]:
            raise SystemExit(f"{path}:{n}: no {metric!r} score (has: {', '.join(row['scores'])})")
        order.append(row["id"])
        by_id[row["id"]] = float(row["scores"][metric])
    return order, by_id, metric


def main() -> None:
    from cowest.stats import min_detectable_difference, paired_bootstrap

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a run directory with eval/predictions/")
    ap.add_argument("--a", default="cowest")
    ap.add_argument("--b", default="collab")
    ap.add_argument("--from", dest="start", type=int, default=0, help="first question (position in the eval)")
    ap.add_argument("--to", dest="stop", type=int, default=None, help="one past the last question")
    ap.add_argument("--metric", default=None, help="a per-question score name (default: the first one recorded)")
    args = ap.parse_args()
    order, a, metric = scores(args.run, args.a, args.metric)
    _, b, _ = scores(args.run, args.b, metric)
    ids = [i for i in order[args.start:args.stop] if i in b]
    if len(ids) < 2:
        raise SystemExit(f"only {len(ids)} questions in positions {args.start}:{args.stop} have both systems")
    xa, xb = [a[i] for i in ids], [b[i] for i in ids]
    d, lo, hi = paired_bootstrap(xa, xb)
    mdd = min_detectable_difference(xa, xb)
    print(f"{args.run} questions {args.start}:{args.start + len(ids)} (n = {len(ids)}), {metric}: "
          f"{args.a} {100 * sum(xa) / len(xa):.1f}, {args.b} {100 * sum(xb) / len(xb):.1f}; "
          f"{args.a} − {args.b} {d:+.1f} [{lo:+.1f}, {hi:+.1f}] (detectable ±{mdd:.1f})")


if __name__ == "__main__":
    main()
