"""Peak memory of one weak-model scoring forward, plain vs merged-adapter model, before vs after the fix.

bench/RESULTS.md 5b: a bf16 forward (``logits_to_keep=2``) cost ~100 MB on the plain SmolLM2-135M model but
+3.3 GB once a LoRA adapter had been merged. This script reproduces it and names the allocating op.

    .venv/bin/python bench/profile_memory.py                      # 32 rows x 195 tokens, 4 cases
    .venv/bin/python bench/profile_memory.py --rows 16 --no-profile

Each case runs in a fresh subprocess: load ``WeakModel`` (bf16, on the CPU), reset the process's peak RSS
(``/proc/self/clear_refs`` = 5, so the load's own peak does not count), run one ``_continuation_logprobs`` batch,
read ``VmHWM``. Then the same batch again under ``torch.profiler`` (``profile_memory=True``): every allocation
is charged to its outermost aten op (with input shapes) and the path down to the op that allocated.

"before fix" disables ``cowest.models.weak.dense_head_input`` (the forward pre-hook on lm_head). The adapter
is a fresh LoRA like SFT's (``all-linear``, r 16, alpha 32, non-zero weights); training does not change memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

MODEL = "offline:smollm2-135m-instruct"


def make_adapter(model_path: str, out: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_path)
    cfg = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False)
    get_peft_model(base, cfg).save_pretrained(out)


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _top_ops(prof, n: int) -> list[tuple[str, float]]:
    """Bytes allocated, summed per (outermost aten op + shapes, op path down to the allocation)."""
    per: dict[str, float] = defaultdict(float)
    for e in prof.events():
        if e.self_cpu_memory_usage <= 0 or not e.name.startswith("aten::"):
            continue  # allocations only (frees are negative), each charged once, to the op that made it
        path, p = [e], e.cpu_parent
        while p is not None and p.name.startswith("aten::"):
            path.append(p)
            p = p.cpu_parent
        top = path[-1]
        inner = [x.name.removeprefix("aten::") for x in reversed(path[:-1])]
        label = f"{top.name}{top.input_shapes}" + (f" > {' > '.join(inner)}" if inner else "")
        per[label] += e.self_cpu_memory_usage / 2**20
    return sorted(per.items(), key=lambda kv: -kv[1])[:n]


def child(args: argparse.Namespace) -> None:
    import torch

    import cowest.models.weak as weak
    from cowest.config import WeakConfig
    from cowest.models.offline import resolve_weak_model

    if not args.fixed:  # the code before the fix: no pre-hook on lm_head
        weak.dense_head_input = lambda model: False
    torch.set_num_threads(args.threads)
    path, _ = resolve_weak_model(MODEL)
    cfg = WeakConfig(model=path, device="cpu", dtype="bfloat16", batch_size=args.rows)
    wm = weak.WeakModel.load(cfg, adapter=args.adapter if args.case == "merged" else None)
    g = torch.Generator().manual_seed(0)
    vocab = wm.model.config.vocab_size
    # context + a 2-token continuation, so logits_to_keep = 3 (RESULTS 5b: 2 after the shared-prefix change)
    batch = [(0, 0, torch.randint(10, vocab, (args.length - 2,), generator=g).tolist(), [100, 200])
             for _ in range(args.rows)]
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_mb("VmRSS")
    t = time.perf_counter()
    wm._continuation_logprobs(batch)
    wall = time.perf_counter() - t
    peak = _status_mb("VmHWM")
    out = {
        "rss_before_mb": before, "peak_mb": peak, "delta_mb": peak - before, "wall_s": wall,
        "requires_grad": sorted({p.requires_grad for p in wm.model.parameters()}),
    }
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True) as prof:
            wm._continuation_logprobs(batch)
        out["head_op"] = sorted({e.name for e in prof.events() if e.name in ("aten::mm", "aten::bmm")
                                 and any(vocab in s for s in e.input_shapes)})
        out["top_ops"] = _top_ops(prof, args.top)
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--length", type=int, default=195, help="tokens per row")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--top", type=int, default=3, help="allocating ops to list per case")
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--adapter", help="a LoRA adapter dir (default: a fresh one in a temp dir)")
    ap.add_argument("--cases", default="plain:before,merged:before,plain:after,merged:after")
    ap.add_argument("--child", choices=["plain", "merged"], help=argparse.SUPPRESS)
    ap.add_argument("--fixed", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.case = args.child
        return child(args)

    from cowest.models.offline import resolve_weak_model

    path, _ = resolve_weak_model(MODEL)  # converts the packaged GGUF once
    tmp = tempfile.TemporaryDirectory()
    adapter = args.adapter or str(Path(tmp.name) / "adapter")
    if not args.adapter:
        make_adapter(path, Path(adapter))
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  bf16 SmolLM2-135M, one forward of {args.rows} rows x "
          f"{args.length} tokens, logits_to_keep=3, {args.threads} thread(s)")
    rows = []
    for spec in args.cases.split(","):
        case, when = spec.split(":")
        cmd = [sys.executable, __file__, "--child", case, "--adapter", adapter, "--rows", str(args.rows),
               "--length", str(args.length), "--threads", str(args.threads), "--top", str(args.top)]
        cmd += ["--fixed"] if when == "after" else []
        cmd += [] if args.profile else ["--no-profile"]
        env = {**os.environ, "TQDM_DISABLE": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.exit(f"{spec} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
        r = json.loads(line[len("RESULT "):])
        rows.append((case, when, r))
        print(f"  {case}/{when} fix: peak {r['peak_mb']:.0f} MB (+{r['delta_mb']:.0f})", flush=True)

    print("\n| case | fix | params require grad | lm_head op | RSS before MB | peak RSS MB | forward adds MB "
          "| wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for case, when, r in rows:
        print(f"| {case} | {when} | {r['requires_grad']} | {','.join(r.get('head_op', [])) or '-'} | "
              f"{r['rss_before_mb']:,.0f} | {r['peak_mb']:,.0f} | **{r['delta_mb']:,.0f}** | {r['wall_s']:.1f} |")
    if args.profile:
        print("\nTop allocating ops (torch.profiler, profile_memory=True; MB summed over the forward):")
        for case, when, r in rows:
            print(f"- {case} / {when} fix:")
            for label, mb in r["top_ops"]:
                print(f"    {mb:8.1f} MB  {label}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
