"""Where does weak drafting spend its time? torch.profiler over one batch, before vs after.

    python bench/profile_weak.py [--prompts 16] [--max-new 32]

Runs one call of K=4 samples for ``--prompts`` demo prompts through (a) the pre-change path,
``model.generate(num_return_sequences=4)``, and (b) ``WeakModel.generate``; prints and saves the top
operators by self CPU time, plus the share of time outside torch ops (Python, generate() bookkeeping),
to ``bench/out/profile/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, write_json  # noqa: E402
from speed import K, WEAK_ALIAS, cowest_generate, demo_prompts, hf_generate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from cowest.config import WeakConfig
    from cowest.models.weak import WeakModel

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--max-new", type=int, default=32)
    p.add_argument("--no-profiler", action="store_true", help="only the plain timings")
    a = p.parse_args(argv)
    out = OUT / "profile"
    out.mkdir(parents=True, exist_ok=True)
    wm = WeakModel.load(WeakConfig(model=WEAK_ALIAS, device="cpu"))
    eos = set(wm._eos_ids()) | {wm.tokenizer.pad_token_id}
    prompts = demo_prompts(a.prompts)
    res: dict = {"timed": {}, "profiled": {}}

    def no_prealloc(*args, **kw):
        WeakModel._PREALLOC = False
        try:
            return cowest_generate(*args, **kw)
        finally:
            WeakModel._PREALLOC = True

    def no_compact(*args, **kw):
        WeakModel._COMPACT = 10**9
        try:
            return cowest_generate(*args, **kw)
        finally:
            WeakModel._COMPACT = 8

    variants = (("before_model_generate", hf_generate), ("after_weakmodel_generate", cowest_generate),
                ("after_without_prealloc", no_prealloc), ("after_without_row_dropping", no_compact))
    # plain timings first (no profiler), each variant once, same prompts and seed
    for name, fn in variants:
        t0 = time.perf_counter()
        toks = fn(wm, prompts, batch_size=a.prompts, max_new=a.max_new, seed=0, eos=eos)
        wall = time.perf_counter() - t0
        res["timed"][name] = {"tokens": toks, "wall_s": round(wall, 2), "tok_s": round(toks / wall, 1)}
        print(f"{name}: {toks} tokens in {wall:.1f}s = {toks / wall:.1f} tok/s", flush=True)
    if a.no_profiler:
        variants = ()
    for name, fn in variants[:2]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            toks = fn(wm, prompts, batch_size=a.prompts, max_new=a.max_new, seed=0, eos=eos)
            wall = time.perf_counter() - t0
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18)
        ops_s = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e6
        (out / f"{name}.txt").write_text(table, encoding="utf-8")
        res["profiled"][name] = {"tokens": toks, "wall_s": round(wall, 2), "self_cpu_in_ops_s": round(ops_s, 2)}
        print(f"== {name} under the profiler: {wall:.1f}s, torch ops self time {ops_s:.1f}s\n{table}", flush=True)
    res["k"], res["prompts"], res["max_new"], res["threads"] = K, a.prompts, a.max_new, torch.get_num_threads()
    write_json(out / "profile.json", res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
