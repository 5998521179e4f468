"""The alignment gain on validation: did DPO make the weak model's drafts more useful to the strong model?

On ``align.validation_questions`` held-out *training-split* questions (``tasks.splits.heldout_train_examples``:
outside the SFT, feedback and DPO subsample; never the eval split), one draft per question from the SFT model
(``weights.drafting_chain(cfg, 1)``) and one from round r's aligned model (``drafting_chain(cfg, r + 1)``), with
the eval decoding (``weak.temperature``/``weak.top_p``, greedy by default); the strong model refines each
(``collab_messages``, usage tag ``validation_collab``; two identical drafts are one request) and the run's
feedback evaluator scores both answers, so the gain is in the units DPO optimised:

    gain = mean E(collab with the aligned draft) − mean E(collab with the SFT draft)

with a paired bootstrap CI, the smallest detectable difference, and the same for the task's primary per-item
metric. Drafts are journaled (``drafts.jsonl``) before any strong call and each question's row is appended to
``records.jsonl`` as it is scored, so a killed run resumes without redrafting or paying twice.

    runs/<name>/validation/round<r>/  drafts.jsonl, records.jsonl, validation.json, .done.json
"""

from __future__ import annotations

import dataclasses
import gc
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cowest.chat import answer_line_count
from cowest.config import RunConfig
from cowest.endpoint import open_strong
from cowest.errors import ConfigError, NotReadyError
from cowest.io import JsonlAppender, read_jsonl, write_json
from cowest.rundir import (RunDir, claim, done_fingerprint, fingerprint, heldout_identity, mark_done, stage_status,
                           strong_identity)
from cowest.stats import min_detectable_difference, paired_bootstrap
from cowest.tasks.base import Example, Task

CHUNK = 16
TAGS = ("validation_collab", "validation_judge")
SIDES = ("sft", "aligned")


def records_fingerprint(cfg: RunConfig, round_: int) -> str:
    """What a validation row depends on (not the number of questions: a run can be extended)."""
    rd = RunDir(cfg)
    fb = cfg.feedback
    task = dataclasses.replace(cfg.task, n_eval=None)  # n_train stays: it decides which questions are held out
    weak = (cfg.weak.model, cfg.weak.gguf_file, cfg.weak.adapter, cfg.weak.max_new_tokens, cfg.weak.temperature,
            cfg.weak.top_p)
    scoring = (fb.evaluator, fb.metric, fb.judge_base_url, fb.judge_model, fb.judge_weight)
    return fingerprint(task, cfg.seed, weak, strong_identity(cfg), scoring, done_fingerprint(rd.sft),
                       done_fingerprint(rd.align(round_)), round_, *heldout_identity(cfg))


def stage_fingerprint(cfg: RunConfig, round_: int) -> str:
    return fingerprint(records_fingerprint(cfg, round_), cfg.align.validation_questions)


def _check_ready(cfg: RunConfig, round_: int) -> None:
    if cfg.align.validation_questions <= 0:
        raise ConfigError("align.validation_questions is 0 (validation off): set how many held-out training "
                          "questions to validate on, e.g. align.validation_questions=64")
    if round_ > cfg.rounds:
        raise ConfigError(f"--round {round_}: the run has rounds={cfg.rounds}")
    if not (RunDir(cfg).align(round_) / ".done.json").exists():
        raise NotReadyError(f"align round {round_} has not finished: run `cowest align --round {round_}` first")


# --------------------------------------------------------------------------------------------------
# drafts


def draft_both(cfg: RunConfig, round_: int, task: Task, examples: list[Example],
               load_weak: Callable[[str], Any] | None = None) -> dict[str, list[str]]:
    """One draft per question from each side (SFT, then round ``round_``'s aligned model), one model in
    memory at a time; ``load_weak(side)`` overrides the loading (tests)."""
    from cowest.inference.systems import weak_drafts
    from cowest.weights import drafting_chain, load_weak as load_chain_weak

    def default_load(side: str) -> Any:
        if side == "sft":
            return load_chain_weak(cfg, drafting_chain(cfg, 1))
        return load_chain_weak(cfg, drafting_chain(cfg, round_ + 1), aligned_round=round_)

    load = load_weak or default_load
    out: dict[str, list[str]] = {}
    for side in SIDES:
        wm = load(side)
        out[side] = weak_drafts(wm, task, examples, cfg.task.format, desc=f"weak ({side}) drafts", confidence=False,
                                temperature=cfg.weak.temperature, top_p=cfg.weak.top_p, seed=cfg.seed).texts
        del wm
        gc.collect()
    return out


# --------------------------------------------------------------------------------------------------
# strong answers and scores


def score_chunk(cfg: RunConfig, task: Task, examples: list[Example], drafts: dict[str, dict[str, Any]],
                client: Any, evaluator: Any) -> list[dict[str, Any]]:
    """The strong model's answer to each distinct (question, draft), scored; one row per question."""
    from cowest.inference.prompts import collab_messages
    from cowest.models.strong import ChatRequest

    top = evaluator.top_logprobs
    index: dict[tuple[str, str], int] = {}
    reqs, req_ex = [], []
    for ex in examples:
        for side in SIDES:
            d = drafts[ex.id][side]
            if (ex.id, d) not in index:  # identical drafts: one request
                index[(ex.id, d)] = len(reqs)
                reqs.append(ChatRequest(messages=collab_messages(task, ex, d, cfg.task.format), top_logprobs=top))
                req_ex.append(ex)
    res = client.chat_batch(reqs, tag="validation_collab", desc="strong + draft")
    scored = evaluator.score(task, [(ex, r.text) for ex, r in zip(req_ex, res)], desc="judge",
                             logprobs=[r.logprobs for r in res] if top else None)
    rows = []
    for ex in examples:
        row: dict[str, Any] = {"id": ex.id, "question": ex.question, "gold": ex.gold}
        for side in SIDES:
            d = drafts[ex.id][side]
            i = index[(ex.id, d)]
            s = scored[i]
            row[side] = {"draft": d, "output": res[i].text, "answer": s.answer, "score": s.score,
                         "metric": float(task.item_scores(s.answer, ex).get(task.primary_item_key, 0.0))}
        row["identical"] = row["sft"]["draft"] == row["aligned"]["draft"]
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# the stage


def run_validation(cfg: RunConfig, round_: int = 1, *, overwrite: bool = False, show: bool = True,
                   strong_client_factory: Callable[[], Any] | None = None,
                   load_weak: Callable[[str], Any] | None = None, chunk_size: int = CHUNK) -> dict[str, Any]:
    """Validate round ``round_``'s aligned model (resumable); returns and writes ``validation.json``."""
    from tqdm.auto import tqdm

    from cowest.feedback.collect import chunks_per_wave, judge_client_for
    from cowest.feedback.evaluators import Evaluator, check_evaluator, needs_logprobs
    from cowest.tasks.splits import heldout_train_examples

    _check_ready(cfg, round_)
    rd = RunDir(cfg)
    stage = rd.validation(round_)
    fp = stage_fingerprint(cfg, round_)
    if stage_status(stage, fp) == "done" and not overwrite:
        summary = read_summary(stage)
        if show:
            print_summary(summary)
        return summary
    claim(stage / ".started.json", records_fingerprint(cfg, round_), overwrite=overwrite,
          clear=lambda: shutil.rmtree(stage),
          refusal=f"validation round {round_} in {stage} was started with a different config or model; pass "
                  "--overwrite to discard its rows (cached strong answers are kept)")
    (stage / ".done.json").unlink(missing_ok=True)
    t0 = time.perf_counter()
    n = cfg.align.validation_questions
    task, examples = heldout_train_examples(cfg, n, purpose="validation (align.validation_questions)")
    fb = cfg.feedback
    check_evaluator(fb.evaluator, task, fb.metric, examples[0] if examples else None)
    with JsonlAppender(stage / "records.jsonl") as out, JsonlAppender(stage / "drafts.jsonl") as journal:
        todo = [ex for ex in examples if ex.id not in out.done]
        undrafted = [ex for ex in todo if ex.id not in journal.done]
        if undrafted:  # journaled before any strong call: a resumed run reuses them
            texts = draft_both(cfg, round_, task, undrafted, load_weak)
            for i, ex in enumerate(undrafted):
                journal.write({"id": ex.id, **{side: texts[side][i] for side in SIDES}})
        drafts = {str(r["id"]): r for r in journal.rows}
        if todo:
            with open_strong(cfg, stage=f"validation_round{round_}", factory=strong_client_factory,
                             logprobs=needs_logprobs(fb.evaluator)) as client:
                judge = judge_client_for(cfg, client) if fb.evaluator in ("judge", "both") else None
                evaluator = Evaluator(fb.evaluator, judge_client=judge, judge_weight=fb.judge_weight,
                                      tag="validation_judge", metric=fb.metric)
                bar = tqdm(total=len(examples), initial=len(examples) - len(todo), desc=f"validation round {round_}",
                           unit="q")
                per_call = chunk_size * chunks_per_wave(client, chunk_size)  # questions whose calls go together
                try:
                    for i in range(0, len(todo), per_call):
                        for row in score_chunk(cfg, task, todo[i:i + per_call], drafts, client, evaluator):
                            out.write(row)
                            bar.update(1)
                finally:
                    bar.close()
                    if judge is not None and judge is not client:
                        judge.close()
        by_id = {str(r["id"]): r for r in out.rows}
    rows = [by_id[ex.id] for ex in examples if ex.id in by_id]
    summary = summarise(rows, round_=round_, asked=n, evaluator=fb.evaluator, metric=task.primary_metric,
                        paid=_paid(rd, round_), wall_s=time.perf_counter() - t0)
    write_json(stage / "validation.json", summary)
    mark_done(stage, fp, questions=len(rows), align=done_fingerprint(rd.align(round_)))  # eval's report checks it
    if show:
        print_summary(summary)
    return summary


def _paid(rd: RunDir, round_: int) -> dict[str, int]:
    """Strong calls this stage paid for (cache hits excluded), over every run of it (``usage.json``)."""
    from cowest.models.usage import Usage

    if not rd.usage_path.exists():
        return {}
    by_tag = Usage.load(rd.usage_path, stage=f"validation_round{round_}").by_tag()
    return {t: int(by_tag[t].get("calls", 0) - by_tag[t].get("cached", 0)) for t in TAGS if t in by_tag}


def repeating_drafts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Per side, the validation records whose draft repeats its answer line (ran on past it)."""
    return {side: sum(answer_line_count(r[side]["draft"]) > 1 for r in rows) for side in SIDES}


def summarise(rows: list[dict[str, Any]], *, round_: int, asked: int, evaluator: str, metric: str,
              paid: dict[str, int], wall_s: float = 0.0) -> dict[str, Any]:
    """The gain (aligned − SFT, in points) with its paired CI and detectable difference, in the evaluator's
    units (questions where both sides were scored) and in the task's primary metric (all questions)."""
    scored = [r for r in rows if r["sft"]["score"] is not None and r["aligned"]["score"] is not None]
    a = [float(r["aligned"]["score"]) for r in scored]
    b = [float(r["sft"]["score"]) for r in scored]
    ma = [r["aligned"]["metric"] for r in rows]
    mb = [r["sft"]["metric"] for r in rows]
    needed = sum(1 if r["identical"] else 2 for r in rows)
    return {
        "round": round_,
        "questions_asked": asked,
        "n": len(rows),
        "n_scored": len(scored),
        "evaluator": evaluator,
        "metric": metric,
        "gain": _ci(a, b),
        "detectable": _mde(a, b),
        "metric_gain": _ci(ma, mb),
        "metric_detectable": _mde(ma, mb),
        "means": {"sft": {"score": _mean(b), metric: _mean(mb)}, "aligned": {"score": _mean(a), metric: _mean(ma)}},
        "identical_share": round(sum(r["identical"] for r in rows) / len(rows), 4) if rows else None,
        # drafts that repeat their answer line (ran on past it): a side effect of DPO to watch for
        "repeated_answer_share": {side: round(k / len(rows), 4) for side, k in repeating_drafts(rows).items()}
                                 if rows else None,
        "strong_calls_needed": needed,
        "strong_calls_paid": sum(paid.values()),
        "strong_calls_paid_by_tag": paid,
        "wall_s": round(wall_s, 1),
    }


def _ci(a: list[float], b: list[float]) -> list[float] | None:
    return [round(x, 2) for x in paired_bootstrap(a, b)] if a else None


def _mde(a: list[float], b: list[float]) -> float | None:
    m = min_detectable_difference(a, b) if len(a) >= 2 else float("nan")
    return round(m, 2) if m == m else None


def _mean(xs: list[float]) -> float | None:
    return round(100.0 * sum(xs) / len(xs), 2) if xs else None


def read_summary(stage: Path) -> dict[str, Any]:
    import json

    return json.loads((stage / "validation.json").read_text())


def load_records(cfg: RunConfig, round_: int) -> list[dict[str, Any]]:
    path = RunDir(cfg).validation(round_) / "records.jsonl"
    return read_jsonl(path) if path.exists() else []


def format_ci(ci: list[float] | None) -> str:
    return f"{ci[0]:+.1f} [{ci[1]:+.1f}, {ci[2]:+.1f}]" if ci else "—"


def print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"alignment gain on validation, round {s['round']} (n={s['n']} held-out training questions)")
    for c in ("measure", "SFT drafts", "aligned drafts", "gain (95% CI)", "detectable Δ"):
        t.add_column(c, justify="left" if c == "measure" else "right")
    m = s["metric"]
    for label, key, gain, mde in ((f"E ({s['evaluator']}, n={s['n_scored']})", "score", s["gain"], s["detectable"]),
                                  (m, m, s["metric_gain"], s["metric_detectable"])):
        sft, al = s["means"]["sft"][key], s["means"]["aligned"][key]
        t.add_row(label, "—" if sft is None else f"{sft:.1f}", "—" if al is None else f"{al:.1f}", format_ci(gain),
                  "—" if mde is None else f"±{mde:.1f}")
    Console().print(t)
    share, rep = s["identical_share"], s.get("repeated_answer_share")
    print(f"identical drafts: {'—' if share is None else f'{100 * share:.0f}%'}; strong calls needed "
          f"{s['strong_calls_needed']}, paid {s['strong_calls_paid']}")
    if rep:
        print(f"drafts repeating their answer line: SFT {100 * rep['sft']:.0f}%, aligned {100 * rep['aligned']:.0f}%")
