"""llama.cpp's raw speed on many sequences at once: prompt tokens/s and generated tokens/s per load setting.

    python bench/llama_prefill.py [--rows 8,32] [--gen 8] [--settings repack,plain,plain+nofa,plain+split]
        [--quantize Q8_0,BF16]

What ``cowest.models.llama_batch`` is built on, without its scheduler: ``rows`` MedMCQA feedback prompts (the
workload of bench/strong_engines.py, formatted as llama_cpp.server formats them) read in one llama_decode per 2,048
tokens, then ``--gen`` greedy tokens for every row together, one llama_decode per step. Settings: ``repack``
(llama.cpp's extra buffer types: weight repacking, the one-slot server's default), ``plain`` (repacking off),
``+nofa`` (flash attention off; default: llama.cpp's auto), ``+split`` (a KV stream per sequence instead of one
unified cache). ``--quantize`` adds the same weights requantized from the packaged Q4_K_M (``llama_model_quantize``,
into bench/out) in the plain setting. Needs ../shared/data/medmcqa; writes bench/out/llama_prefill.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, md_table, now_utc  # noqa: E402
from strong_engines import RECIPE, feedback_workload  # noqa: E402


def prompts(n: int, gguf: str) -> list[list[int]]:
    from cowest.config import load_config
    from cowest.models.llama_compat import ChatTemplate
    from cowest.tasks import get_task

    cfg = load_config(str(RECIPE), [])
    _, reqs = feedback_workload(cfg, get_task(cfg.task), n)
    chat = ChatTemplate(gguf)
    return [chat(r.messages)[0] for r in reqs]


def measure(gguf: str, setting: str, rows: int, gen: int, toks: list[list[int]]) -> dict:
    import llama_cpp as L
    import numpy as np

    mp = L.llama_model_default_params()
    mp.use_extra_bufts = setting.startswith("repack")
    model = L.llama_model_load_from_file(gguf.encode(), mp)
    vocab = L.llama_model_get_vocab(model)
    nv = L.llama_vocab_n_tokens(vocab)
    cp = L.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = 512 * rows, 2048, 512, rows
    from cowest.models.cpu import physical_cores

    cp.n_threads = cp.n_threads_batch = physical_cores()
    cp.kv_unified = "+split" not in setting
    if "+nofa" in setting:
        cp.flash_attn_type = 0
    ctx = L.llama_init_from_model(model, cp)
    batch = L.llama_batch_init(2048, 0, 1)

    def run(items):  # (token, position, sequence, wants logits) -> argmax of each requested row
        out = []
        for start in range(0, len(items), 2048):
            chunk = items[start:start + 2048]
            for i, (t, p, s, lg) in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = t, p, 1, lg
                batch.seq_id[i][0] = s
            batch.n_tokens = len(chunk)
            assert L.llama_decode(ctx, batch) == 0
            out += [int(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(nv,)).argmax())
                    for i, (_, _, _, lg) in enumerate(chunk) if lg]
        return out

    toks = toks[:rows]
    t0 = time.perf_counter()
    nxt = run([(t, i, s, i == len(tk) - 1) for s, tk in enumerate(toks) for i, t in enumerate(tk)])
    t1 = time.perf_counter()
    pos, steps = [len(tk) for tk in toks], 0
    for _ in range(gen):
        nxt = run([(nxt[s], pos[s], s, True) for s in range(rows)])
        pos = [p + 1 for p in pos]
        steps += rows
    t2 = time.perf_counter()
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)
    n_prompt = sum(len(t) for t in toks)
    return {"gguf": Path(gguf).name, "setting": setting, "rows": rows, "prompt_tokens": n_prompt,
            "prompt_tok_s": round(n_prompt / (t1 - t0), 1), "gen_tokens": steps,
            "gen_tok_s": round(steps / (t2 - t1), 1) if steps else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="8,32")
    ap.add_argument("--gen", type=int, default=8)
    ap.add_argument("--settings", default="repack,plain,plain+nofa,plain+split")
    ap.add_argument("--quantize", default="", help="e.g. Q8_0,BF16: requantized copies, plain setting")
    args = ap.parse_args()
    if not (Path(__file__).resolve().parents[2] / "shared" / "data" / "medmcqa").exists():
        print("skipped: ../shared/data/medmcqa is absent (the prompts come from it)")
        return
    import llama_cpp as L

    from cowest.models.offline import resolve_strong_gguf

    gguf = str(resolve_strong_gguf("offline:qwen2.5-coder-1.5b-instruct"))
    rows = [int(x) for x in args.rows.split(",")]
    toks = prompts(max(rows), gguf)
    cases = [(gguf, s) for s in args.settings.split(",")]
    for q in filter(None, args.quantize.split(",")):
        dst = OUT / f"qwen2.5-coder-1.5b-instruct-{q.lower()}.gguf"
        if not dst.exists():
            p = L.llama_model_quantize_default_params()
            p.ftype, p.allow_requantize = getattr(L, f"LLAMA_FTYPE_MOSTLY_{q}"), True
            assert L.llama_model_quantize(gguf.encode(), str(dst).encode(), p) == 0
        cases.append((str(dst), "plain"))
    res = []
    for path, setting in cases:
        for r in rows:
            res.append(measure(path, setting, r, args.gen, toks))
            print(json.dumps(res[-1]), flush=True)
    print(f"\n{now_utc()}\n")
    print(md_table(["weights", "setting", "rows", "prompt tokens", "prompt tok/s", "generated tok/s"],
                   [[r["gguf"], r["setting"], r["rows"], r["prompt_tokens"], r["prompt_tok_s"], r["gen_tok_s"]]
                    for r in res]))
    (OUT / "llama_prefill.json").write_text(json.dumps({"date": now_utc(), "runs": res}, indent=1))


if __name__ == "__main__":
    main()
