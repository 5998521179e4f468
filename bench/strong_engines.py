"""The local strong model's engines side by side on a real workload (the strong-throughput issue).

    python bench/strong_engines.py [--prompts 32] [--inflight 1,8,32] [--big 64] [--engines llama.cpp@1,llama.cpp,batch]

Workload: the feedback stage's strong+draft prompts of ``recipes/medmcqa_cpu.yaml`` (its feedback questions from
the MedMCQA train split, one draft each by the offline SmolLM2 at the recipe's temperature, the recipe's
``strong.max_tokens``), temperature 0, cache off (every call paid). Each engine is the managed server cowest
starts for ``strong.local`` (same GGUF, Qwen2.5-Coder-1.5B Q4_K_M; the batch engine reads its bf16 conversion),
driven through ``StrongClient.chat_batch`` at each number of requests in flight. ``--big N`` adds one run of N
prompts at N in flight on the batch engine.

Reports calls/s and generated tok/s (wall clock, server start excluded), the answers' agreement with the first
engine's at temperature 0, and each engine's accuracy on the prompts (gold = the MedMCQA answer). Writes
``bench/out/strong_engines.json`` and prints a markdown table. Needs ../shared/data/medmcqa.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, ROOT, md_table, now_utc  # noqa: E402

RECIPE = ROOT / "recipes" / "medmcqa_cpu.yaml"


def workload(n: int):
    """(task, examples, requests): n strong+draft requests, drafts cached in bench/out."""
    from cowest.config import load_config
    from cowest.inference.prompts import collab_messages, weak_messages
    from cowest.models.strong import ChatRequest
    from cowest.tasks import get_task, subsample

    cfg = load_config(str(RECIPE), [])
    task = get_task(cfg.task)
    pool = subsample(task.load(cfg.task.train_split), cfg.task.n_train, cfg.seed)
    examples = subsample(pool, cfg.feedback.max_questions, cfg.seed + 1)[:n]
    if len(examples) < n:  # more than the recipe's feedback questions: take further train questions
        extra = [ex for ex in pool if ex.id not in {e.id for e in examples}]
        examples += extra[: n - len(examples)]
    cache = OUT / "strong_workload_drafts.json"
    drafts = json.loads(cache.read_text()) if cache.exists() else {}
    todo = [ex for ex in examples if ex.id not in drafts]
    if todo:
        from cowest.models.weak import WeakModel

        weak = WeakModel.load(cfg.weak)
        outs = weak.generate([weak_messages(task, ex, cfg.task.format) for ex in todo], n=1,
                             temperature=cfg.feedback.temperature, top_p=cfg.feedback.top_p,
                             max_new_tokens=cfg.weak.max_new_tokens, seed=cfg.seed, desc="weak drafts")
        drafts.update({ex.id: o[0] for ex, o in zip(todo, outs)})
        OUT.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(drafts, indent=1))
    reqs = [ChatRequest(collab_messages(task, ex, drafts[ex.id], cfg.task.format), temperature=0.0,
                        max_tokens=cfg.strong.max_tokens) for ex in examples]
    return cfg, task, examples, reqs


def run_engine(cfg, spec: str, reqs, inflight: int, parallel: int) -> dict:
    from cowest.models.local_server import make_server
    from cowest.models.strong import StrongClient

    engine, _, threads = spec.partition("@")  # "llama.cpp@1": one generation thread
    local = dataclasses.replace(cfg.strong.local, engine=engine, parallel=parallel,
                                threads=int(threads) if threads else None)
    log_dir = OUT / "strong_engines_logs" / f"{spec}-{inflight}"
    with make_server(local, log_dir) as srv:
        scfg = dataclasses.replace(cfg.strong, base_url=srv.base_url, model=srv.model, api_key_env=None, cache=False,
                                   max_concurrency=inflight, timeout_s=3600)
        with StrongClient(scfg, progress=True) as client:
            t = time.perf_counter()
            res = client.chat_batch(reqs, tag="bench", desc=f"{engine} x{inflight}")
            wall = time.perf_counter() - t
    gen = sum(r.completion_tokens for r in res)
    return {"engine": spec, "inflight": inflight, "n": len(reqs), "wall_s": round(wall, 1),
            "calls_per_s": len(reqs) / wall, "gen_tok_per_s": gen / wall, "completion_tokens": gen,
            "prompt_tokens": sum(r.prompt_tokens for r in res), "texts": [r.text for r in res]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--inflight", default="1,8,32", help="requests in flight for the batch engine")
    ap.add_argument("--big", type=int, default=64, help="one more batch run: N prompts, N in flight (0: none)")
    ap.add_argument("--engines", default="llama.cpp,batch",
                    help="comma-separated ENGINE[@THREADS]; e.g. llama.cpp@1,llama.cpp (threads: physical cores)")
    args = ap.parse_args()
    data = ROOT.parent / "shared" / "data" / "medmcqa"
    if not data.exists():
        print(f"skipped: {data} is absent (the MedMCQA workload needs it)")
        return
    n_all = max(args.prompts, args.big)
    cfg, task, examples, reqs = workload(n_all)
    runs = []
    for engine in args.engines.split(","):
        levels = [1] if engine.startswith("llama.cpp") else [int(x) for x in args.inflight.split(",")]
        for k in levels:
            sub = reqs[: args.prompts] if k > 1 else reqs[: min(args.prompts, 8 if engine == "batch" else args.prompts)]
            runs.append(run_engine(cfg, engine, sub, k, max(k, 1)))
            print(json.dumps({x: runs[-1][x] for x in ("engine", "inflight", "n", "wall_s", "calls_per_s",
                                                         "gen_tok_per_s")}), flush=True)
    if args.big and "batch" in args.engines.split(","):
        runs.append(run_engine(cfg, "batch", reqs[: args.big], args.big, args.big))
    ref = runs[0]
    rows = []
    for r in runs:
        m = min(len(r["texts"]), len(ref["texts"]))
        agree = sum(task.parse_answer(a, example=ex) == task.parse_answer(b, example=ex)
                    for a, b, ex in zip(r["texts"][:m], ref["texts"][:m], examples))
        same_text = sum(a == b for a, b in zip(r["texts"][:m], ref["texts"][:m]))
        correct = sum(task.parse_answer(t, example=ex) in ex.gold for t, ex in zip(r["texts"], examples))
        r.update(agree_answer=f"{agree}/{m}", same_text=f"{same_text}/{m}", accuracy=f"{correct}/{len(r['texts'])}")
        rows.append([r["engine"], r["inflight"], r["n"], r["wall_s"], f"{r['calls_per_s']:.3f}",
                     f"{r['gen_tok_per_s']:.1f}", f"{r['calls_per_s'] / ref['calls_per_s']:.2f}x",
                     r["agree_answer"], r["same_text"], r["accuracy"]])
    print(f"\n{now_utc()}; {RECIPE.name} feedback strong+draft prompts, max_tokens {cfg.strong.max_tokens}, "
          f"temperature 0; ratios against the first row\n")
    print(md_table(["engine", "in flight", "prompts", "wall s", "calls/s", "generated tok/s", "calls/s ratio",
                    "same answer as row 1", "same text as row 1", "correct"], rows))
    (OUT / "strong_engines.json").write_text(json.dumps({"date": now_utc(), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
