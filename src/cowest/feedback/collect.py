"""Stage 2: collaborative feedback over the training questions (METHOD.md step 3).

For each question x: z ~ π_s(·|x) (the strong model alone, ``feedback.z_samples`` draws), K drafts
y_k ~ π_w(·|x) by sampling, the collaboration's answer π_s(·|x, y_k) for each, their scores by the
evaluator, and Δ_k = E(π_s∘y_k) − mean E(z). Δ_k > 0: chosen; Δ_k ≤ 0: rejected.

Questions are drafted in fixed chunks of ``CHUNK``, and the strong calls of a wave of chunks go out together
(:func:`chunks_per_wave`: enough questions to fill the strong side's in-flight slots; strong alone and strong +
draft in one batch), then scores, then one JSON line per question in ``records.jsonl``. A chunk's drafts are
journaled in ``drafts.jsonl`` (one line per chunk: index, question ids, seed, drafts) before any strong call for
it. A killed run restarts where it stopped: finished questions are skipped, and a half-done chunk reuses its
journaled drafts, so its strong answers come from the cache and nothing is paid twice. Redrafting would not do:
sampling with the same seed is not bit-reproducible across processes on every CPU (bf16 kernels), and a different
draft is a different, newly paid request. Only a chunk with no journaled drafts (or drafts journaled for
other questions) is drafted, and the weak model is loaded only then. Then ``pairs.jsonl`` and
``feedback_stats.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cowest.config import RunConfig
from cowest.endpoint import open_strong, strong_client
from cowest.io import JsonlAppender, write_json
from cowest.rundir import RunDir, claim, fingerprint, mark_done, section_view, stage_status, strong_identity
from cowest.tasks.base import Example, Task, subsample
from cowest.weights import weak_for

CHUNK = 16
TAGS = ("feedback_z", "feedback_collab", "feedback_judge")
DRAFTS = "drafts.jsonl"  # the draft journal, in the stage directory


# --------------------------------------------------------------------------------------------------
# fingerprints and resumption


def collection_fingerprint(cfg: RunConfig, round_: int, *, legacy: bool = False) -> str:
    """What the records depend on: not the pairing settings (pairs are re-derived from records), nor
    ``task.n_eval``. ``legacy``: the fingerprint runs made before 2026-12 recorded (n_eval included)."""
    fb = cfg.feedback
    task = cfg.task if legacy else dataclasses.replace(cfg.task, n_eval=None)
    collect = {k: v for k, v in section_view(fb).items()
               if k not in ("pairing", "min_margin", "max_pairs_per_question", "max_pairs")}
    strong = strong_identity(cfg)
    weak = (cfg.weak.model, cfg.weak.gguf_file, cfg.weak.adapter, cfg.weak.max_new_tokens, cfg.weak.max_prompt_tokens)
    upstream = [cfg.sft] + ([cfg.align] if round_ > 1 else [])
    return fingerprint(task, cfg.seed, weak, strong, collect, round_, *upstream)


def stage_fingerprint(cfg: RunConfig, round_: int, *, legacy: bool = False) -> str:
    fb = cfg.feedback
    return fingerprint(collection_fingerprint(cfg, round_, legacy=legacy), fb.pairing, fb.min_margin,
                       fb.max_pairs_per_question, fb.max_pairs)


def _claim(stage: Path, cfp: str, overwrite: bool, round_: int, legacy: str) -> None:
    """Refuse to resume records made under another config (clear them with ``overwrite``)."""
    import shutil

    unclaimed = not (stage / ".started.json").exists()
    if overwrite and unclaimed and any((stage / f).exists() for f in ("records.jsonl", DRAFTS)):
        shutil.rmtree(stage)  # records without a start marker: the draft journal goes with them
    claim(stage / ".started.json", cfp, overwrite=overwrite, clear=lambda: shutil.rmtree(stage), legacy=legacy,
          refusal=f"feedback round {round_} in {stage} was started with a different config; pass --overwrite "
                  "to discard its records (cached strong answers are kept) or choose another run name")


def chunk_seed(cfg: RunConfig, round_: int, ci: int) -> int:
    return cfg.seed * 1_000_003 + round_ * 10_007 + ci


def _journal_key(ci: int, ids: list[str], seed: int, k: int) -> str:
    return f"{ci}/{seed}/{k}/" + hashlib.sha256(json.dumps(ids).encode("utf-8")).hexdigest()[:16]


def journal_drafts(journal: JsonlAppender, ci: int, ids: list[str], seed: int, drafts: list[list[str]]) -> None:
    """Persist a chunk's drafts (before any strong call for it): a resumed run reuses them."""
    key = _journal_key(ci, ids, seed, len(drafts[0]) if drafts else 0)
    journal.write({"key": key, "chunk": ci, "ids": ids, "seed": seed, "drafts": drafts})


def journaled_drafts(journal: JsonlAppender, ci: int, ids: list[str], seed: int, k: int) -> list[list[str]] | None:
    """The drafts journaled for chunk ``ci`` of exactly these questions and seed, K per question, or None
    (never drafted, or journaled for other questions: e.g. another ``chunk_size``)."""
    key = _journal_key(ci, ids, seed, k)
    for row in journal.rows:
        ds = row.get("drafts")
        if (row.get("key") == key and row.get("ids") == ids and isinstance(ds, list) and len(ds) == len(ids)
                and all(isinstance(d, list) and len(d) == k and all(isinstance(t, str) for t in d) for d in ds)):
            return ds
    return None


# --------------------------------------------------------------------------------------------------
# models


def judge_client_for(cfg: RunConfig, strong: Any) -> Any:
    """The judge endpoint: the strong client itself unless ``feedback.judge_base_url/judge_model`` differ."""
    fb = cfg.feedback
    if fb.judge_base_url is None and fb.judge_model is None:
        return strong
    jcfg = dataclasses.replace(
        cfg.strong, base_url=fb.judge_base_url or getattr(strong, "cfg", cfg.strong).base_url,
        model=fb.judge_model or cfg.strong.model,
    )
    return strong_client(cfg, jcfg, usage=strong.usage)


# --------------------------------------------------------------------------------------------------
# one chunk


def draft_chunk(cfg: RunConfig, task: Task, examples: list[Example], weak: Any, seed: int) -> list[list[str]]:
    """K sampled drafts per question."""
    from cowest.inference.prompts import weak_messages

    fb = cfg.feedback
    prompts = [weak_messages(task, ex, cfg.task.format) for ex in examples]
    return weak.generate(prompts, n=fb.k, temperature=fb.temperature, top_p=fb.top_p,
                         max_new_tokens=cfg.weak.max_new_tokens, seed=seed, desc="weak drafts")


def chunks_per_wave(strong: Any, chunk_size: int) -> int:
    """How many chunks' strong calls go out together: enough questions for the client's in-flight slots. A
    batching server (cowest's batch engine, vLLM) then stays full, and pays for the tail of its longest answer
    once a wave rather than twice a chunk: on IfQA at 64 in flight a chunk's 16 strong-alone answers (chain of
    thought) took 86 s on their own, its 59 refine calls 68 s (bench/RESULTS.md). One slot (llama.cpp): one chunk."""
    in_flight = getattr(getattr(strong, "cfg", None), "max_concurrency", 1) or 1
    return max(1, math.ceil(in_flight / chunk_size))


def collect_wave(cfg: RunConfig, task: Task, examples: list[Example], drafts: list[list[str]], strong: Any,
                 evaluator: Any) -> list[dict[str, Any]]:
    """Strong answers, scores and Δ for a wave of questions and their journaled drafts; one record per question."""
    from cowest.inference.prompts import collab_messages, strong_alone_messages, weak_messages
    from cowest.models.strong import ChatRequest

    fb, fmt = cfg.feedback, cfg.task.format
    prompts = [weak_messages(task, ex, fmt) for ex in examples]
    z_temp = None if fb.z_samples == 1 else fb.z_temperature
    top = evaluator.top_logprobs  # the likelihood evaluator reads the scored answers' own log-probs
    z_reqs = [ChatRequest(messages=strong_alone_messages(task, ex), sample_index=s, temperature=z_temp, top_logprobs=top)
              for ex in examples for s in range(fb.z_samples)]
    # A draft sampled twice for the same question is one request.
    c_index: dict[tuple[int, str], int] = {}
    c_reqs = []
    for qi, (ex, ds) in enumerate(zip(examples, drafts)):
        for d in ds:
            if (qi, d) not in c_index:
                c_index[(qi, d)] = len(c_reqs)
                c_reqs.append(ChatRequest(messages=collab_messages(task, ex, d, fmt), top_logprobs=top))
    # one batch (strong alone first: its long answers start first), each call counted under its own tag
    res = strong.chat_batch(z_reqs + c_reqs, tag=["feedback_z"] * len(z_reqs) + ["feedback_collab"] * len(c_reqs),
                            desc="strong alone (z) + with drafts")
    z_res, c_res = res[:len(z_reqs)], res[len(z_reqs):]
    z_texts = [[z_res[qi * fb.z_samples + s].text for s in range(fb.z_samples)] for qi in range(len(examples))]
    c_texts = [[c_res[c_index[(qi, d)]].text for d in ds] for qi, ds in enumerate(drafts)]
    # One scoring pass for the chunk (a single concurrent judge batch).
    items = [(ex, t) for ex, ts in zip(examples, z_texts) for t in ts]
    items += [(ex, t) for ex, ts in zip(examples, c_texts) for t in ts]
    lps = [r.logprobs for r in z_res] + [c_res[c_index[(qi, d)]].logprobs for qi, ds in enumerate(drafts) for d in ds]
    scored = evaluator.score(task, items, desc="judge", logprobs=lps if top else None)
    nz = len(examples) * fb.z_samples
    z_sc, c_sc = scored[:nz], scored[nz:]
    records = []
    for qi, ex in enumerate(examples):
        zs = z_sc[qi * fb.z_samples:(qi + 1) * fb.z_samples]
        cs = c_sc[qi * fb.k:(qi + 1) * fb.k]
        answers = [task.parse_answer(d, example=ex) for d in drafts[qi]]
        rec = {
            "id": ex.id,
            "question": ex.question,
            "gold": ex.gold,
            "prompt": prompts[qi],
            "drafts": drafts[qi],
            "draft_answers": answers,
            # the weak draft's own answer under the metric: what a pair teaches beyond the answer (pair_signal)
            "draft_scores": draft_scores(answers, task, ex, evaluator),
            "collab_outputs": c_texts[qi],
            "collab_answers": [s.answer for s in cs],
            "z_outputs": z_texts[qi],
            "z_answers": [s.answer for s in zs],
            **deltas_and_labels([s.score for s in zs], [s.score for s in cs]),
        }
        if evaluator.kind in ("judge", "both"):
            rec["judge"] = {"z": [s.judge_texts for s in zs], "collab": [s.judge_texts for s in cs]}
        if evaluator.kind == "likelihood":  # None: no readable option, scored by the metric instead
            rec["likelihood"] = {"z": [s.likelihood for s in zs], "collab": [s.likelihood for s in cs]}
        records.append(rec)
    return records


def deltas_and_labels(z_scores: list[float | None], collab_scores: list[float | None]) -> dict[str, Any]:
    """A record's scores and what they give: Δ = E(collab) − mean E(z) per draft (None where a score is missing),
    labelled chosen (Δ > 0) or rejected (Δ ≤ 0)."""
    zvals = [z for z in z_scores if z is not None]
    z_mean = sum(zvals) / len(zvals) if zvals else None
    deltas = [None if (c is None or z_mean is None) else c - z_mean for c in collab_scores]
    return {"collab_scores": collab_scores, "z_scores": z_scores, "z_mean": z_mean, "deltas": deltas,
            "labels": [None if d is None else ("chosen" if d > 0 else "rejected") for d in deltas]}


# --------------------------------------------------------------------------------------------------
# the stage


def run_feedback(cfg: RunConfig, round_: int = 1, *, overwrite: bool = False, weak: Any = None, strong: Any = None,
                 strong_client_factory: Callable[[], Any] | None = None, chunk_size: int = CHUNK) -> dict[str, Any]:
    """Collect records (resumable), then write pairs and stats; returns the stats."""
    from tqdm.auto import tqdm

    from cowest.feedback.evaluators import check_evaluator, make_evaluator, needs_logprobs
    from cowest.feedback.pairs import check_pairing
    from cowest.tasks.splits import extra_train_examples, train_examples

    rd = RunDir(cfg)
    stage = rd.feedback(round_)
    fp, cfp = stage_fingerprint(cfg, round_), collection_fingerprint(cfg, round_)
    if stage_status(stage, fp, stage_fingerprint(cfg, round_, legacy=True)) == "done" and not overwrite:
        return json.loads((stage / "feedback_stats.json").read_text())
    _claim(stage, cfp, overwrite, round_, collection_fingerprint(cfg, round_, legacy=True))
    (stage / ".done.json").unlink(missing_ok=True)
    t0 = time.perf_counter()
    task, examples = train_examples(cfg)
    check_evaluator(cfg.feedback.evaluator, task, cfg.feedback.metric, examples[0] if examples else None)
    check_pairing(cfg.feedback.pairing, task.labels)
    # Feedback costs 1 + K strong calls per question: a subset of the SFT questions may be enough.
    # Extra questions come after them, so the chunks (and their seeded drafts) of the SFT questions stay the same.
    examples = subsample(examples, cfg.feedback.max_questions, cfg.seed + round_) + extra_train_examples(cfg)
    chunks = [examples[i:i + chunk_size] for i in range(0, len(examples), chunk_size)]
    usage: dict[str, Any] = {}
    with JsonlAppender(stage / "records.jsonl", key_field="id") as out, \
            JsonlAppender(stage / DRAFTS, key_field="key") as journal:
        resumed = sum(1 for ex in examples if ex.id in out.done)
        todo = [(ci, ch) for ci, ch in enumerate(chunks) if any(ex.id not in out.done for ex in ch)]
        journaled = {ci: journaled_drafts(journal, ci, [ex.id for ex in ch], chunk_seed(cfg, round_, ci),
                                          cfg.feedback.k) for ci, ch in todo}
        if weak is None and any(d is None for d in journaled.values()):  # only if a chunk must be drafted
            weak = weak_for(cfg, "feedback", round_)
        if todo:
            with _maybe_open(strong, lambda: open_strong(cfg, factory=strong_client_factory, stage=f"feedback_round{round_}",
                                                         logprobs=needs_logprobs(cfg.feedback.evaluator))) as client:
                judge = judge_client_for(cfg, client) if cfg.feedback.evaluator in ("judge", "both") else None
                evaluator = make_evaluator(cfg.feedback.evaluator, judge, cfg.feedback.judge_weight, cfg.feedback.metric)
                bar = tqdm(total=len(examples), initial=resumed, desc=f"feedback round {round_}", unit="q")
                per_wave = chunks_per_wave(client, chunk_size)
                try:
                    for w in range(0, len(todo), per_wave):
                        wave, wave_drafts = [], []
                        for ci, ch in todo[w:w + per_wave]:
                            seed, drafts = chunk_seed(cfg, round_, ci), journaled[ci]
                            if drafts is None:  # journaled before any strong call: a resume reuses them
                                drafts = draft_chunk(cfg, task, ch, weak, seed)
                                journal_drafts(journal, ci, [ex.id for ex in ch], seed, drafts)
                            wave += ch
                            wave_drafts += drafts
                        for rec in collect_wave(cfg, task, wave, wave_drafts, client, evaluator):
                            if rec["id"] not in out.done:
                                out.write(rec)
                                bar.update(1)
                finally:
                    bar.close()
                    if judge is not None and judge is not client:
                        judge.close()
                by_tag = client.usage.by_tag() if getattr(client, "usage", None) is not None else {}
                usage = {t: by_tag[t] for t in TAGS if t in by_tag}
        by_id = {str(r["id"]): r for r in out.rows}
    records = with_draft_scores([by_id[ex.id] for ex in examples if ex.id in by_id], task, examples, cfg.feedback.metric)
    stats = finish_feedback(cfg, round_, records, usage=usage, resumed=resumed, wall_s=time.perf_counter() - t0)
    mark_done(stage, fp, questions=len(records), pairs=stats["pairs"])
    return stats


def with_draft_scores(records: list[dict[str, Any]], task: Task, examples: list[Example],
                      metric: str) -> list[dict[str, Any]]:
    """Records resumed from before feedback scored the drafts' own answers get their ``draft_scores`` (no call)."""
    from cowest.feedback.evaluators import Evaluator

    ev, by_id = Evaluator("metric", metric=metric), {ex.id: ex for ex in examples}
    return [r if r.get("draft_scores") is not None else
            {**r, "draft_scores": draft_scores(r["draft_answers"], task, by_id[str(r["id"])], ev)} for r in records]


def draft_scores(answers: list[str | None], task: Task, ex: Example, evaluator: Any) -> list[float]:
    """Each weak draft's own answer scored by ``evaluator``'s metric against ``ex``'s gold."""
    return [evaluator.metric_score(task, a, ex) for a in answers]


class _maybe_open:
    """Use the caller's client as is, or open (and later close) one."""

    def __init__(self, client: Any, opener: Callable[[], Any]):
        self.client, self.opener, self.cm = client, opener, None

    def __enter__(self) -> Any:
        if self.client is not None:
            return self.client
        self.cm = self.opener()
        return self.cm.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self.cm is not None:
            self.cm.__exit__(*exc)


def finish_feedback(cfg: RunConfig, round_: int, records: list[dict[str, Any]], *, usage: dict[str, Any],
                    resumed: int = 0, wall_s: float = 0.0) -> dict[str, Any]:
    """Pairs and stats from the records (no model calls)."""
    from cowest.feedback.pairs import make_pairs, outcomes, pair_labels, pair_signal, save_pairs

    fb = cfg.feedback
    stage = RunDir(cfg).feedback(round_)
    pairs = make_pairs(records, fb.pairing, fb.min_margin, fb.max_pairs_per_question, fb.max_pairs, cfg.seed)
    save_pairs(RunDir(cfg).pairs(round_), pairs)
    deltas = [d for r in records for d in r["deltas"]]
    present = [d for d in deltas if d is not None]
    outc = outcomes(records, fb.pairing, fb.min_margin)
    paid = {t: int(u.get("calls", 0) - u.get("cached", 0)) for t, u in usage.items()}
    stats = {
        "round": round_,
        "questions": len(records),
        "questions_resumed": resumed,
        "drafts": len(deltas),
        "chosen": sum(1 for d in present if d > 0),
        "rejected": sum(1 for d in present if d <= 0),
        "missing_scores": len(deltas) - len(present),
        "questions_with_pairs": outc["paired"],
        "no_pair": {k: v for k, v in outc.items() if k != "paired"},
        "pairs": len(pairs),
        "pairing": {"rule": fb.pairing, "min_margin": fb.min_margin, "max_per_question": fb.max_pairs_per_question,
                    "max_total": fb.max_pairs},
        "evaluator": fb.evaluator,
        "mean_z_score": _mean([r["z_mean"] for r in records]),
        "mean_collab_score": _mean([s for r in records for s in r["collab_scores"]]),
        "delta_histogram": delta_histogram(present),
        "strong_calls": sum(paid.values()),
        "strong_calls_by_tag": paid,
        "strong_tokens": int(sum(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0) for u in usage.values())),
        "strong_usage": usage,
        **evaluator_figures(records, present, len(pairs), usage),
        "pair_signal": pair_signal(records, pairs),
        "pair_labels": pair_labels(records, pairs),
        "wall_s": round(wall_s, 1),
    }
    write_json(stage / "feedback_stats.json", stats)
    return stats


def evaluator_figures(records: list[dict[str, Any]], present: list[float], n_pairs: int,
                      usage: dict[str, Any]) -> dict[str, Any]:
    """What an evaluator is compared on: how often Δ = 0 (no signal), pairs per question, and the strong
    requests (z + distinct collaborations + judge verdicts) and paid calls/tokens behind each pair."""
    requests = sum(len(r.get("z_outputs") or [r.get("z_mean")]) + len(set(r["drafts"])) for r in records)
    requests += int(usage.get("feedback_judge", {}).get("calls", 0))
    paid_calls = sum(int(u.get("calls", 0) - u.get("cached", 0)) for u in usage.values())
    paid_tokens = sum(int(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0)) for u in usage.values())
    out: dict[str, Any] = {
        "delta_zero_share": round(sum(1 for d in present if d == 0) / len(present), 4) if present else None,
        "pairs_per_question": round(n_pairs / len(records), 4) if records else None,
        "per_pair": {"strong_requests": _ratio(requests, n_pairs), "strong_calls_paid": _ratio(paid_calls, n_pairs),
                     "strong_tokens_paid": _ratio(paid_tokens, n_pairs)},
    }
    if any("likelihood" in r for r in records):  # answers without a readable option, scored by the metric
        out["likelihood_fallbacks"] = sum(v is None for r in records for side in r.get("likelihood", {}).values()
                                          for v in side)
    return out


def _ratio(a: float, b: int) -> float | None:
    return round(a / b, 2) if b else None


def delta_histogram(deltas: list[float], width: float = 0.25) -> dict[str, Any]:
    """Counts of Δ in bins of ``width`` over [-1, 1], and how many are exactly 0 (rejected ties)."""
    n = int(round(2 / width))
    edges = [round(-1 + i * width, 4) for i in range(n + 1)]
    counts = [0] * n
    for d in deltas:
        i = min(n - 1, max(0, math.floor((d + 1) / width)))
        counts[i] += 1
    return {"edges": edges, "counts": counts, "exactly_zero": sum(1 for d in deltas if d == 0)}


def _mean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return round(sum(vals) / len(vals), 4) if vals else None
