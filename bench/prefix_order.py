"""A question's strong prompts sent system by system vs side by side, and a question-first prompt layout.

    python bench/prefix_order.py [--task ifqa] [--n 12] [--order apart,paired,qfirst,qfirst,paired,apart]

Per question three strong prompts: strong-alone and two refine prompts (two drafts): eval's strong, collab and
cowest, or feedback's z and two of its K drafts. llama.cpp's server (one slot) keeps the last prompt's KV cache, so
a prompt that follows one with the same prefix reads only the rest. Orders:
- ``apart``: system by system (eval before ``SystemRunner.prefetch``).
- ``paired``: every strong-alone prompt first, then each question's refine prompts together: eval's order now
  (strong, then collab + cowest in one batch) and feedback's (a chunk's z, then each question's K drafts).
- ``qfirst``: a layout tried and not adopted (``QFIRST_*`` below): every strong prompt starts with the instruction
  and the question, so strong-alone shares the question with the refine prompts; question by question.
- ``ORDER+logprobs``: that order against a server that computes every token's logits (llama-cpp-python's default,
  which token log-probs need; cowest starts it so only for the likelihood evaluator's stages), e.g.
  ``--order paired+logprobs,paired,paired,paired+logprobs``.
Workload: ``recipes/<task>_cpu.yaml``'s eval questions, two drafts each sampled by the offline SmolLM2 (T=1, cached
in bench/out), the recipe's ``strong.max_tokens``, temperature 0, cache off, the managed llama.cpp server started
once. A B C C B A spreads a neighbour's load. Reports calls/s per order, ratios to the first order, and each run's answers'
agreement with the first run of the same prompts and EM (strong-alone and refined: the two layouts may differ in
quality; reusing the KV cache may change low bits). Writes ``bench/out/prefix_order.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, ROOT, machine, machine_line, md_table, now_utc, write_json  # noqa: E402


def QFIRST_strong_alone(task, ex):  # tried 2026-12-01: the question before the ask
    from cowest.chat import answer_form

    return [{"role": "system", "content": "You are a helpful, knowledgeable assistant."}, {"role": "user", "content": (
        f"{task.instruction()}\n\n{ex.question.strip()}\n\nThink step by step in at most three short sentences, "
        f"then give the final answer on the last line in the form {answer_form(task.answer_format())}.")}]


def QFIRST_collab(task, ex, draft, fmt):
    from cowest.chat import answer_form
    from cowest.inference.prompts import _DRAFT_NAME

    return [{"role": "system", "content": "You are a helpful, knowledgeable assistant."}, {"role": "user", "content": (
        f"{task.instruction()}\n\n{ex.question.strip()}\n\nA smaller model that was fine-tuned on this domain wrote "
        f"{_DRAFT_NAME[fmt]} for the question above. The draft holds domain knowledge you may lack, but it can be "
        "wrong. Weigh it against your own knowledge, reason briefly, then give the final answer on the last line in "
        f"the form {answer_form(task.answer_format())}.\n\n<draft>\n{draft.strip()}\n</draft>")}]


def workload(cfg, task, n: int):
    """(examples, {order: [(question index, kind, request)]}) for n eval questions; kind: z | d0 | d1."""
    from cowest.inference.prompts import collab_messages, strong_alone_messages, weak_messages
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
    fmt = cfg.task.format

    def ask(i: int, kind: str, qfirst: bool = False):
        ex = examples[i]
        if kind == "z":
            m = QFIRST_strong_alone(task, ex) if qfirst else strong_alone_messages(task, ex)
        else:
            d = drafts[ex.id][int(kind[1])]
            m = QFIRST_collab(task, ex, d, fmt) if qfirst else collab_messages(task, ex, d, fmt)
        return (i, kind, ChatRequest(m, temperature=0.0))

    q, kinds = range(len(examples)), ("z", "d0", "d1")
    return examples, {
        "apart": [ask(i, k) for k in kinds for i in q],
        "paired": [ask(i, "z") for i in q] + [ask(i, k) for i in q for k in kinds[1:]],
        "qfirst": [ask(i, k, True) for i in q for k in kinds],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="ifqa")
    ap.add_argument("--n", type=int, default=12, help="questions (three prompts each)")
    ap.add_argument("--order", default="apart,paired,qfirst,qfirst,paired,apart")
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
    examples, orders = workload(cfg, task, args.n)
    runs = []
    setting, stack = None, contextlib.ExitStack()
    with stack:
        for k, spec in enumerate(args.order.split(",")):
            order, _, extra = spec.partition("+")
            if extra not in ("", "logprobs"):
                raise SystemExit(f"--order {spec}: the only suffix is +logprobs")
            if extra != setting:  # a server per setting: +logprobs starts llama.cpp computing every token's logits
                stack.close()
                scfg = stack.enter_context(strong_endpoint(cfg.strong, OUT / "prefix_order_logs", logprobs=bool(extra)))
                client = stack.enter_context(StrongClient(dataclasses.replace(scfg, cache=False, max_concurrency=1,
                                                                              timeout_s=3600)))
                setting = extra
            reqs = orders[order]
            t = time.perf_counter()
            res = client.chat_batch([r for _, _, r in reqs], tag=order, desc=f"{k}: {spec}")
            wall = time.perf_counter() - t
            texts = {f"{i}/{kind}": x.text for (i, kind, _), x in zip(reqs, res)}
            runs.append({"run": k, "order": spec, "layout": "qfirst" if order == "qfirst" else "cowest",
                         "calls": len(reqs), "wall_s": round(wall, 1), "calls_per_s": len(reqs) / wall,
                         "prompt_tokens": sum(x.prompt_tokens for x in res), "texts": texts})
            print(json.dumps({x: runs[-1][x] for x in ("run", "order", "calls", "wall_s", "calls_per_s")}), flush=True)
    report(runs, examples, task)


def report(runs: list[dict], examples, task) -> None:
    def em(run: dict, z: bool) -> str:
        keys = [k for k in run["texts"] if k.endswith("/z") == z]
        if not keys:
            return "–"
        score = lambda k: task.item_scores(task.parse_answer(run["texts"][k], example=examples[int(k.split("/")[0])]),  # noqa: E731
                                           examples[int(k.split("/")[0])]).get(task.primary_item_key, 0)
        return f"{100 * sum(score(k) for k in keys) / len(keys):.1f}"

    def same(run: dict) -> str:
        ref = next(r for r in runs if r["layout"] == run["layout"])
        return f"{100 * sum(run['texts'][k] == ref['texts'][k] for k in run['texts']) / len(run['texts']):.0f}%"

    orders = list(dict.fromkeys(r["order"] for r in runs))
    mean = {o: sum(r["calls_per_s"] for r in runs if r["order"] == o) / sum(r["order"] == o for r in runs) for o in orders}
    rows = [[r["run"], r["order"], r["calls"], r["wall_s"], f"{r['calls_per_s']:.3f}", r["prompt_tokens"], same(r),
             em(r, True), em(r, False)] for r in runs]
    print(md_table(["run", "order", "calls", "wall s", "calls/s", "prompt tokens", "same answers as the first run "
                    "of these prompts", f"{task.primary_item_key} alone", f"{task.primary_item_key} refined"], rows))
    ratios = {o: mean[o] / mean[orders[0]] for o in orders}
    print("\nmean calls/s: " + ", ".join(f"{o} {mean[o]:.3f} ({ratios[o]:.2f}x {orders[0]})" for o in orders)
          + f"  ({machine_line(machine())})")
    write_json(OUT / "prefix_order.json", {"date": now_utc(), "runs": [{k: v for k, v in r.items() if k != "texts"}
                                                                       for r in runs],
                                           "mean_calls_per_s": mean, "ratio_to_first": ratios, "table": rows})


if __name__ == "__main__":
    main()
