"""Strong-model speed of llama.cpp builds and load settings, side by side in one run (the AMX issue).

    python bench/llama_builds.py --build native=/tmp/lcp_native --build vetted=.venv/lib/python3.11/site-packages \
        [--rounds 2] [--tokens 128]

Each ``--build NAME=DIR`` is a directory holding an installed ``llama_cpp`` package (e.g. ``pip install --no-deps
--target DIR wheel``). For every build and ``use_extra_bufts`` on/off, a fresh subprocess loads the strong model
(``offline:qwen2.5-coder-1.5b-instruct``, Q4_K_M), answers one MedMCQA-style refine prompt greedily, and reports
prompt and generated tokens per second from llama.cpp's own timings. Rounds interleave the cases (A B C A B C)
so a noisy neighbour slows them all alike. Prints a markdown table; raw figures go to
``bench/out/llama_builds.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, md_table, now_utc  # noqa: E402

PROMPT = (
    "You are answering a medical multiple-choice question. A draft from a domain expert is below; use it if it "
    "helps, then give your final answer.\n\nQuestion: A 45-year-old man presents with progressive dysphagia to "
    "both solids and liquids, regurgitation of undigested food and weight loss. Barium swallow shows a dilated "
    "oesophagus with a 'bird's beak' narrowing. Which is the most likely diagnosis?\nA. Achalasia cardia\n"
    "B. Diffuse oesophageal spasm\nC. Carcinoma oesophagus\nD. Scleroderma\n\n<draft>The bird's beak appearance "
    "with dysphagia to both solids and liquids from the start suggests a motility disorder of the lower "
    "oesophageal sphincter.</draft>\n\nExplain briefly, then end with 'Answer: <letter>'."
)

CHILD = r"""
import json, sys, time
import llama_cpp
from llama_cpp import Llama
gguf, extra, tokens, prompt = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4]
if not extra:
    import llama_cpp.llama_cpp as lib
    d = lib.llama_model_default_params
    def p():
        x = d(); x.use_extra_bufts = False; return x
    lib.llama_model_default_params = p
t = time.perf_counter()
llm = Llama(gguf, n_ctx=2048, n_threads=2, verbose=False, seed=0)
load_s = time.perf_counter() - t
msgs = [{"role": "user", "content": prompt}]
llm.create_chat_completion(msgs, max_tokens=4, temperature=0)  # warm-up
t = time.perf_counter()
out = llm.create_chat_completion(msgs, max_tokens=tokens, temperature=0)
wall = time.perf_counter() - t
perf = llama_cpp.llama_perf_context(llm.ctx)
print(json.dumps({
    "load_s": load_s, "wall_s": wall, "completion_tokens": out["usage"]["completion_tokens"],
    "prompt_tokens": out["usage"]["prompt_tokens"],
    "prompt_tok_s": perf.n_p_eval / (perf.t_p_eval_ms / 1000) if perf.t_p_eval_ms else None,
    "gen_tok_s": perf.n_eval / (perf.t_eval_ms / 1000) if perf.t_eval_ms else None,
    "text": out["choices"][0]["message"]["content"],
    "system_info": llama_cpp.llama_print_system_info().decode(),
}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", action="append", required=True, help="NAME=DIR with an installed llama_cpp")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    from cowest.models.offline import resolve_strong_gguf

    gguf = str(resolve_strong_gguf("offline:qwen2.5-coder-1.5b-instruct"))
    builds = dict(b.split("=", 1) for b in args.build)
    cases = [(name, extra) for name in builds for extra in (True, False)]
    runs: dict[tuple[str, bool], list[dict]] = {c: [] for c in cases}
    for r in range(args.rounds):
        for name, extra in cases:
            env = dict(os.environ, PYTHONPATH=builds[name])
            p = subprocess.run([sys.executable, "-c", CHILD, gguf, "1" if extra else "0", str(args.tokens), PROMPT],
                               capture_output=True, text=True, env=env)
            if p.returncode != 0:
                res = {"error": f"exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]}"}
            else:
                res = json.loads(p.stdout.strip().splitlines()[-1])
            runs[(name, extra)].append(res)
            print(f"round {r + 1} {name} extra_bufts={extra}: "
                  + (res.get("error") or f"prompt {res['prompt_tok_s']:.1f} tok/s, gen {res['gen_tok_s']:.1f} tok/s"),
                  flush=True)
    rows = []
    for (name, extra), rs in runs.items():
        ok = [x for x in rs if "error" not in x]
        med = (lambda k: f"{statistics.median(x[k] for x in ok):.1f}") if ok else (lambda k: "failed")
        rows.append([name, "on" if extra else "off", med("prompt_tok_s"), med("gen_tok_s"),
                     " / ".join(f"{x['gen_tok_s']:.1f}" for x in ok), f"{len(ok)}/{len(rs)}"])
    texts = {f"{n}/{'on' if e else 'off'}": (rs[0].get("text") if rs else None) for (n, e), rs in runs.items()}
    same = len({t for t in texts.values() if t}) == 1
    print(f"\n{now_utc()}; {args.rounds} rounds, ≤ {args.tokens} new tokens, greedy; "
          f"all cases wrote the same text: {same}\n")
    print(md_table(["build", "extra_bufts", "prompt tok/s (median)", "generated tok/s (median)",
                    "generated tok/s per round", "ok runs"], rows))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "llama_builds.json").write_text(json.dumps(
        {"date": now_utc(), "builds": builds, "runs": {f"{n}/{e}": rs for (n, e), rs in runs.items()},
         "same_text": same}, indent=1))


if __name__ == "__main__":
    main()
