"""The local strong model's engines side by side on two real workloads (the strong-throughput issue, 11).

    python bench/strong_engines.py [--order llama.cpp,batch,batch,llama.cpp] [--inflight 1,8,32]
        [--feedback 32] [--eval 16] [--single 4] [--batching continuous] [--top-logprobs 10]

Workloads (temperature 0, cache off: every call paid; ``recipes/medmcqa_cpu.yaml``'s ``strong.max_tokens``):
- ``feedback``: the feedback stage's strong+draft prompts (its questions from the MedMCQA train split, one draft
  each by the offline SmolLM2, cached in bench/out): ~190 prompt tokens, answers of a few tokens (prefill-bound).
- ``eval``: strong-alone chain-of-thought prompts (``inference.prompts.strong_alone_messages``) on questions of the
  recipe's eval split: short prompts, long answers (decode-bound), as the eval stage's strong-alone system.

Engines are the managed servers cowest starts for ``strong.local`` (same GGUF, Qwen2.5-Coder-1.5B Q4_K_M; the batch
engine reads its bf16 conversion), driven through ``StrongClient.chat_batch``. ``--order`` lists engine blocks
(ENGINE[@THREADS][:BATCHING][+DTYPE], e.g. ``batch+int8`` for ``strong.local.dtype=int8``); each block runs both
workloads, llama.cpp at 1 request in flight (one slot), the batch engine at each ``--inflight`` (at 1 in flight only
on the first ``--single`` prompts of each workload, in the first batch block), on a fresh server per setting so that
no prompt is ever answered from another setting's KV pages. A B B A ordering spreads a neighbour's load over both;
a setting run in two blocks also gives its run-to-run repeatability (the same text at temperature 0).

Reports per run calls/s and generated tok/s (wall clock, server start excluded), the server's peak RSS (process
tree, polled every 0.2 s), the answers' agreement with the first llama.cpp run at temperature 0 and accuracy, then
means per setting with ratios to llama.cpp and a paired bootstrap CI of accuracy (batch - llama.cpp) with the
smallest detectable difference. Writes ``bench/out/strong_engines.json``. Needs ../shared/data/medmcqa.

``--top-logprobs N``: every request asks for token log-probs with N alternatives (the likelihood evaluator's
requests; llama.cpp then computes every token's logits); writes ``bench/out/strong_engines_logprobs.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, ROOT, md_table, now_utc  # noqa: E402

RECIPE = ROOT / "recipes" / "medmcqa_cpu.yaml"


def feedback_workload(cfg, task, n: int, top_logprobs: int | None = None):
    """(examples, requests): n strong+draft requests, drafts cached in bench/out."""
    from cowest.inference.prompts import collab_messages, weak_messages
    from cowest.models.strong import ChatRequest
    from cowest.tasks import subsample

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
    return examples, [ChatRequest(collab_messages(task, ex, drafts[ex.id], cfg.task.format), temperature=0.0,
                                  max_tokens=cfg.strong.max_tokens, top_logprobs=top_logprobs) for ex in examples]


def eval_workload(cfg, task, n: int, top_logprobs: int | None = None):
    """(examples, requests): n strong-alone CoT requests on the eval split."""
    from cowest.inference.prompts import strong_alone_messages
    from cowest.models.strong import ChatRequest
    from cowest.tasks import subsample

    examples = subsample(task.load(cfg.task.eval_split), n, cfg.seed)
    return examples, [ChatRequest(strong_alone_messages(task, ex), temperature=0.0, max_tokens=cfg.strong.max_tokens,
                                  top_logprobs=top_logprobs) for ex in examples]


class PeakRSS:
    """The peak RSS (MB) of a process and its children, polled in a thread."""

    def __init__(self, pid: int):
        import psutil

        self.proc, self.peak, self._stop = psutil.Process(pid), 0.0, threading.Event()
        threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs) / 2**20)
            except Exception:  # noqa: BLE001 - the process ended
                return

    def stop(self) -> float:
        self._stop.set()
        return self.peak


def run_block(cfg, spec: str, workloads: dict, levels: list[int], single: int, block: int) -> list[dict]:
    """One engine block: every workload at every level, on a fresh server per level. A server that has seen a
    prompt keeps its KV pages (prefix caching), so a second level over the same prompts would measure cache hits,
    which no real stage pays for twice (the strong cache answers a repeated request)."""
    engine = spec.partition("+")[0].partition(":")[0].partition("@")[0]
    if engine == "llama.cpp" and ":" not in spec:  # the one-slot server; llama.cpp:continuous is llama_batch
        levels = [1]
    elif single > 0:
        levels = [1] + [k for k in levels if k != 1]
    else:
        levels = [k for k in levels if k != 1]
    runs = []
    for k in levels:
        runs += run_level(cfg, spec, workloads, k, single if k == 1 and engine != "llama.cpp" else 0, block)
    return runs


def run_level(cfg, spec: str, workloads: dict, k: int, single: int, block: int) -> list[dict]:
    """Every workload at ``k`` requests in flight (only the first ``single`` prompts if > 0), server started once."""
    from cowest.models.local_server import make_server
    from cowest.models.strong import StrongClient

    engine, _, dtype = spec.partition("+")  # "batch+int8": strong.local.dtype=int8
    engine, _, batching = engine.partition(":")
    engine, _, threads = engine.partition("@")  # "llama.cpp@1": one generation thread
    local = dataclasses.replace(cfg.strong.local, engine=engine, parallel=k, dtype=dtype or cfg.strong.local.dtype,
                                threads=int(threads) if threads else None, batching=batching or "continuous")
    runs = []
    logprobs = any(r.top_logprobs is not None for _, reqs in workloads.values() for r in reqs)
    with make_server(local, OUT / "strong_engines_logs" / f"{block}-{spec}-x{k}", logprobs=logprobs) as srv:
        rss = PeakRSS(srv.proc.pid)
        for wname, (examples, reqs) in workloads.items():
            todo = reqs[:single] if single > 0 else reqs
            scfg = dataclasses.replace(cfg.strong, base_url=srv.base_url, model=srv.model, api_key_env=None,
                                       cache=False, max_concurrency=k, timeout_s=3600)
            with StrongClient(scfg, progress=True) as client:
                t = time.perf_counter()
                res = client.chat_batch(todo, tag="bench", desc=f"{spec} {wname} x{k}")
                wall = time.perf_counter() - t
            gen = sum(r.completion_tokens for r in res)
            if logprobs:  # every answer came with its tokens' log-probs
                assert all(r.logprobs and "".join(t["token"] for t in r.logprobs).strip() == r.text.strip() for r in res)
            runs.append({"block": block, "engine": spec, "workload": wname, "inflight": k, "n": len(todo),
                         "wall_s": round(wall, 1), "calls_per_s": len(todo) / wall, "gen_tok_per_s": gen / wall,
                         "completion_tokens": gen, "prompt_tokens": sum(r.prompt_tokens for r in res),
                         "server_peak_mb_so_far": round(rss.peak), "texts": [r.text for r in res]})
            print(json.dumps({x: runs[-1][x] for x in ("block", "engine", "workload", "inflight", "n", "wall_s",
                                                       "calls_per_s", "gen_tok_per_s", "server_peak_mb_so_far")}),
                  flush=True)
        peak = rss.stop()
    for r in runs:
        r["server_peak_mb"] = round(peak)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--order", default="llama.cpp,batch,batch,llama.cpp",
                    help="engine blocks, ENGINE[@THREADS][:BATCHING][+DTYPE], e.g. llama.cpp,batch:static,batch+int8; "
                    "llama.cpp:continuous is llama.cpp with many requests at once (cowest.models.llama_batch)")
    ap.add_argument("--inflight", default="1,8,32", help="requests in flight for the batch engine")
    ap.add_argument("--feedback", type=int, default=32, help="feedback prompts (0: skip the workload)")
    ap.add_argument("--eval", type=int, default=16, help="strong-alone CoT prompts (0: skip the workload)")
    ap.add_argument("--single", type=int, default=4, help="prompts per workload at 1 in flight on the batch engine")
    ap.add_argument("--top-logprobs", type=int, default=None, help="ask every request for token log-probs with this "
                    "many alternatives (the likelihood evaluator's requests)")
    ap.add_argument("--report-only", action="store_true", help="the tables from bench/out/strong_engines.json "
                    "(e.g. of a run stopped after some blocks; the same workload sizes)")
    args = ap.parse_args()
    result = OUT / ("strong_engines.json" if args.top_logprobs is None else "strong_engines_logprobs.json")
    data = ROOT.parent / "shared" / "data" / "medmcqa"
    if not data.exists():
        print(f"skipped: {data} is absent (the MedMCQA workload needs it)")
        return
    from cowest.config import load_config
    from cowest.tasks import get_task

    cfg = load_config(str(RECIPE), [])
    task = get_task(cfg.task)
    workloads = {}
    if args.feedback:
        workloads["feedback"] = feedback_workload(cfg, task, args.feedback, args.top_logprobs)
    if args.eval:
        workloads["eval"] = eval_workload(cfg, task, args.eval, args.top_logprobs)
    if args.report_only:
        report(json.loads(result.read_text())["runs"], workloads, task, cfg, result)
        return
    levels = [int(x) for x in args.inflight.split(",")]
    runs, seen_batch = [], False
    for b, spec in enumerate(args.order.split(",")):
        is_batch = not spec.startswith("llama.cpp")
        runs += run_block(cfg, spec, workloads, levels, args.single if is_batch and not seen_batch else 0, b)
        seen_batch |= is_batch
        result.write_text(json.dumps({"date": now_utc(), "partial": True, "runs": runs}))
    report(runs, workloads, task, cfg, result)


def one_slot(spec: str) -> bool:
    """Whether an engine block is llama.cpp's one-slot server (the baseline)."""
    return spec.startswith("llama.cpp") and ":" not in spec


def report(runs: list[dict], workloads: dict, task, cfg, result: Path) -> None:
    from cowest.stats import min_detectable_difference, paired_bootstrap

    def score(r: dict) -> list[float]:
        exs = workloads[r["workload"]][0]
        return [float(task.parse_answer(t, example=ex) in ex.gold) for t, ex in zip(r["texts"], exs)]

    refs = {w: next((r for r in runs if r["workload"] == w and one_slot(r["engine"])), None)
            for w in workloads}
    rows = []
    for r in runs:
        exs, ref = workloads[r["workload"]][0], refs[r["workload"]]
        m = min(len(r["texts"]), len(ref["texts"])) if ref else 0
        agree = sum(task.parse_answer(a, example=ex) == task.parse_answer(b, example=ex)
                    for a, b, ex in zip(r["texts"][:m], ref["texts"][:m], exs)) if ref else 0
        r.update(agree_answer=f"{agree}/{m}", same_text=f"{sum(a == b for a, b in zip(r['texts'], (ref or r)['texts']))}"
                 f"/{m}", accuracy=f"{int(sum(score(r)))}/{len(r['texts'])}")
        rows.append([r["block"], r["engine"], r["workload"], r["inflight"], r["n"], r["wall_s"],
                     f"{r['calls_per_s']:.3f}", f"{r['gen_tok_per_s']:.1f}", r["server_peak_mb"], r["agree_answer"],
                     r["same_text"], r["accuracy"]])
    print(f"\n{now_utc()}; {RECIPE.name}, max_tokens {cfg.strong.max_tokens}, temperature 0; agreement against the "
          f"first llama.cpp run of the workload\n")
    print(md_table(["block", "engine", "workload", "in flight", "prompts", "wall s", "calls/s", "generated tok/s",
                    "server peak MB", "same answer", "same text", "correct"], rows))
    summary = []
    for w in workloads:
        base = [r for r in runs if r["workload"] == w and one_slot(r["engine"])]
        base_cps = sum(r["calls_per_s"] for r in base) / len(base) if base else float("nan")
        base_scores = score(base[0]) if base else None
        for key in sorted({(r["engine"], r["inflight"]) for r in runs if r["workload"] == w}):
            rs = [r for r in runs if r["workload"] == w and (r["engine"], r["inflight"]) == key]
            cps = sum(r["calls_per_s"] for r in rs) / len(rs)
            ci = "-"
            s = score(rs[0])
            if base_scores and len(s) == len(base_scores) and not one_slot(key[0]):
                d, lo, hi = paired_bootstrap(s, base_scores)
                ci = f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}], MDD {min_detectable_difference(s, base_scores):.1f}"
            # run to run: the same prompts at temperature 0 on two fresh servers of the same setting
            again = (f"{sum(a == b for a, b in zip(rs[0]['texts'], rs[1]['texts']))}/{len(rs[0]['texts'])}"
                     if len(rs) > 1 else "-")
            summary.append([w, key[0], key[1], len(rs), f"{cps:.3f}",
                            f"{sum(r['gen_tok_per_s'] for r in rs) / len(rs):.1f}", f"{cps / base_cps:.2f}x",
                            max(r["server_peak_mb"] for r in rs), ci, again])
    print("\nMeans over the blocks (A B B A); accuracy difference in points, paired bootstrap 95% CI and the "
          "smallest detectable difference (80% power)\n")
    print(md_table(["workload", "engine", "in flight", "runs", "calls/s", "generated tok/s", "vs llama.cpp",
                    "server peak MB", "accuracy batch - llama.cpp", "same text, run 1 vs 2"], summary))
    result.write_text(json.dumps({"date": now_utc(), "runs": runs, "summary": summary},
                                                        indent=1))


if __name__ == "__main__":
    main()
