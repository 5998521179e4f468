"""Eval's collab and cowest prompts sent apart (one system, then the other) vs side by side per question.

    python bench/prefix_order.py [--task ifqa] [--n 24] [--order apart,together,together,apart]

The two refine prompts of a question are equal up to the draft. llama.cpp's server (one slot) keeps the last
prompt's KV cache, so sent side by side the second reads only its draft (``SystemRunner.prefetch``); sent apart,
as eval did before, each reads the whole question. Workload: ``recipes/<task>_cpu.yaml``'s eval questions, two
drafts per question sampled by the offline SmolLM2 (T=1, cached in bench/out), the recipe's ``strong.max_tokens``,
temperature 0, cache off, the managed llama.cpp server started once. A B B A spreads a neighbour's load.
Reports calls/s per order, the ratio, and the answers' agreement between orders (reusing the KV cache may change
low bits; it must not change answers beyond noise) with each order's EM. Writes ``bench/out/prefix_order.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, ROOT, machine, machine_line, md_table, now_utc, write_json  # noqa: E402


def workload(cfg, task, n: int):
    """(examples, [(collab-like request, cowest-like request)]) for n eval questions."""
    from cowest.inference.prompts import collab_messages, weak_messages
    from cowest.models.strong import ChatRequest
    from cowest.tasks import subsample

    examples = subsample(task.load(cfg.task.eval_split), n, cfg.seed)
    cache = OUT / f"prefix_order_drafts_{cfg.task.name}.json"
    drafts = json.loads(cache.read_text()) if cache.exists() else {}
    todo = [ex for ex in examples if ex.id not in drafts]
    if todo:
        from cowest.models.weak import WeakModel

        weak = WeakModel.load(cfg.weak)
        outs = weak.generate([weak_messages(task, ex, cfg.task.format) for ex in todo], n=2, temperature=1.0,
                             top_p=0.95, seed=cfg.seed, desc="weak drafts")
        drafts.update({ex.id: list(o) for ex, o in zip(todo, outs)})
        write_json(cache, drafts)
    req = lambda ex, d: ChatRequest(collab_messages(task, ex, d, cfg.task.format), temperature=0.0)  # noqa: E731
    return examples, [(req(ex, drafts[ex.id][0]), req(ex, drafts[ex.id][1])) for ex in examples]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="ifqa")
    ap.add_argument("--n", type=int, default=24, help="questions (two prompts each)")
    ap.add_argument("--order", default="apart,together,together,apart")
    args = ap.parse_args()
    data = ROOT.parent / "shared" / "data" / args.task
    if not data.exists():
        print(f"skipped: {data} is absent")
        return
    from cowest.config import load_config
    from cowest.models.local_server import strong_endpoint
    from cowest.models.strong import StrongClient
    from cowest.tasks import get_task

    cfg = load_config(str(ROOT / "recipes" / f"{args.task}_cpu.yaml"), [])
    task = get_task(cfg.task)
    examples, pairs = workload(cfg, task, args.n)
    orders = {"apart": [a for a, _ in pairs] + [b for _, b in pairs], "together": [r for p in pairs for r in p]}
    runs = []
    with strong_endpoint(cfg.strong, OUT / "prefix_order_logs") as scfg:
        scfg = dataclasses.replace(scfg, cache=False, max_concurrency=1, timeout_s=3600)
        with StrongClient(scfg) as client:
            for k, order in enumerate(args.order.split(",")):
                reqs = orders[order]
                t = time.perf_counter()
                res = client.chat_batch(reqs, tag=order, desc=f"{k}: {order}")
                wall = time.perf_counter() - t
                texts = {json.dumps(r.messages): x.text for r, x in zip(reqs, res)}
                runs.append({"run": k, "order": order, "calls": len(reqs), "wall_s": round(wall, 1),
                             "calls_per_s": len(reqs) / wall, "texts": texts})
                print(json.dumps({x: runs[-1][x] for x in ("run", "order", "calls", "wall_s", "calls_per_s")}), flush=True)
    report(runs, examples, pairs, task)


def report(runs: list[dict], examples, pairs, task) -> None:
    keys = [json.dumps(r.messages) for p in pairs for r in p]
    exs = [ex for ex in examples for _ in range(2)]

    def em(run: dict) -> float:
        return 100 * sum(task.item_scores(task.parse_answer(run["texts"][k], example=ex), ex).get(task.primary_item_key, 0)
                         for k, ex in zip(keys, exs)) / len(keys)

    mean = {o: sum(r["calls_per_s"] for r in runs if r["order"] == o) / max(1, sum(r["order"] == o for r in runs))
            for o in ("apart", "together")}
    ref = next(r for r in runs if r["order"] == "apart")
    rows = [[r["run"], r["order"], r["calls"], r["wall_s"], f"{r['calls_per_s']:.3f}",
             f"{100 * sum(r['texts'][k] == ref['texts'][k] for k in keys) / len(keys):.0f}%", f"{em(r):.1f}"]
            for r in runs]
    print(md_table(["run", "order", "calls", "wall s", "calls/s", "same answer as run 0", task.primary_item_key], rows))
    ratio = mean["together"] / mean["apart"] if mean["apart"] else float("nan")
    print(f"\ntogether / apart: {ratio:.2f}x calls/s  ({machine_line(machine())})")
    write_json(OUT / "prefix_order.json", {"date": now_utc(), "runs": [{k: v for k, v in r.items() if k != "texts"}
                                                                       for r in runs],
                                           "ratio": ratio, "table": rows})


if __name__ == "__main__":
    main()
