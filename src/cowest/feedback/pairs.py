"""Preference pairs from feedback records, and the pairs file that hands them to align.

A record holds one question's ``prompt`` (the weak model's chat messages), its K ``drafts`` and their
``deltas`` Δ_k = E(π_s∘y_k) − E(z) (None where a score is missing). A draft with Δ > 0 is *chosen*,
Δ ≤ 0 *rejected*; pairs are formed within a question only, in TRL's conversational preference format::

    {"prompt": [...], "chosen": [{"role": "assistant", "content": y+}], "rejected": [{...: y-}],
     "delta_chosen": Δ+, "delta_rejected": Δ-, "margin": Δ+ - Δ-, "question_id": id}

Rules: ``all`` = every (chosen, rejected) combination, largest margins first, at most
``max_per_question``; ``best_worst`` = the highest-Δ chosen against the lowest-Δ rejected; ``as_well`` = ``all``
restricted to pairs whose drafts' own answers score the same (``draft_scores``), so a pair says how to draft for
the strong model, not which answer is right (:func:`pair_signal`); ``label_balanced`` (label and choice tasks) =
``all``, then as many pairs preferring label b over a as a over b, for every two labels (:func:`balance_labels`), so
that the pairs as a whole prefer no label; ``ranked`` (graded evaluators) = every two drafts of a question with
different Δ, the higher one chosen, whatever the signs: with the likelihood evaluator most questions' drafts all
moved p(gold) the same way, by different amounts, and the sign split left them without a pair (bench/RESULTS.md).
A pair needs margin ≥ ``min_margin`` and two different texts (a duplicated draft never pairs with itself).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cowest.io import write_text

OUTCOMES = ("paired", "all_chosen", "all_rejected", "below_margin", "answers_differ", "unparseable")
RULES = ("all", "best_worst", "as_well", "label_balanced", "ranked")


def split_drafts(record: dict[str, Any]) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(chosen, rejected) as (text, Δ) lists, dropping drafts whose Δ is missing."""
    chosen, rejected = [], []
    for text, d in zip(record["drafts"], record["deltas"]):
        if d is None:
            continue
        (chosen if d > 0 else rejected).append((text, float(d)))
    return chosen, rejected


def question_pairs(record: dict[str, Any], rule: str = "all", min_margin: float = 0.0,
                   max_per_question: int | None = None, seed: int = 0) -> tuple[list[dict[str, Any]], str]:
    """The pairs of one question and its outcome (one of ``OUTCOMES``)."""
    if rule not in RULES:
        raise ValueError(f"unknown pairing rule {rule!r}")
    if rule == "as_well" and record.get("draft_scores") is None:
        raise ValueError(f"pairing=as_well needs the drafts' own scores, which record {record.get('id')!r} lacks")
    chosen, rejected = split_drafts(record)
    if not chosen and not rejected:
        return [], "unparseable"
    if rule == "ranked":  # graded feedback: any higher Δ over any lower one, whatever their signs
        chosen = rejected = chosen + rejected
    elif not rejected:
        return [], "all_chosen"
    elif not chosen:
        return [], "all_rejected"
    # Unique texts only: a draft sampled twice is one candidate (keeps its Δ, which is identical).
    chosen = _unique(chosen)
    rejected = _unique(rejected)
    if rule == "ranked":
        combos = [(c, r) for c in chosen for r in rejected if c[1] > r[1]]
    elif rule == "best_worst":
        combos = [(max(chosen, key=lambda t: t[1]), min(rejected, key=lambda t: t[1]))]
    else:
        combos = [(c, r) for c in chosen for r in rejected]
    combos = [(c, r) for c, r in combos if c[0] != r[0] and c[1] - r[1] >= min_margin]
    if not combos:
        return [], "below_margin"
    if rule == "as_well":
        own = dict(zip(record["drafts"], record["draft_scores"]))
        combos = [(c, r) for c, r in combos if own[c[0]] == own[r[0]]]
        if not combos:
            return [], "answers_differ"
    rng = random.Random(f"{seed}:{record.get('id')}")
    rng.shuffle(combos)  # seeded tie-break among equal margins
    combos.sort(key=lambda cr: cr[0][1] - cr[1][1], reverse=True)
    if max_per_question is not None:
        combos = combos[:max_per_question]
    return [_pair(record, c, r) for c, r in combos], "paired"


def make_pairs(records: Iterable[dict[str, Any]], rule: str = "all", min_margin: float = 0.0,
               max_per_question: int | None = 4, max_total: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """All questions' pairs; with ``max_total``, a seeded sample of that many (question order kept)."""
    records = list(records)  # read twice under label_balanced: a generator would be empty the second time
    pairs: list[dict[str, Any]] = []
    for rec in records:
        pairs.extend(question_pairs(rec, rule, min_margin, max_per_question, seed)[0])
    if rule == "label_balanced":
        pairs = balance_labels(records, pairs, seed)
    if max_total is not None and len(pairs) > max_total:
        keep = sorted(random.Random(seed).sample(range(len(pairs)), max_total))
        pairs = [pairs[i] for i in keep]
    return pairs


def check_pairing(rule: str, labels: Iterable[str] | None) -> None:
    """``label_balanced`` needs a task with a fixed label set (free-form answers almost never pair both ways)."""
    if rule == "label_balanced" and not labels:
        from cowest.errors import ConfigError

        raise ConfigError("feedback.pairing=label_balanced needs a task with labels or options; this task's answers "
                          "are free-form: use all, best_worst or as_well")


def balance_labels(records: Iterable[dict[str, Any]], pairs: list[dict[str, Any]],
                   seed: int = 0) -> list[dict[str, Any]]:
    """The pairs that leave no label preferred overall: for labels a != b, the k = min(#a over b, #b over a)
    largest-margin pairs of each direction are kept, the rest dropped. Pairs whose drafts say the same label, or
    where a draft has no readable answer (a lesson in format, not in labels), are kept.

    Why: on ProsocialDialog the 0/1 feedback's chosen drafts said the majority label 74 of 125 times, and DPO
    moved 197 of 200 dev drafts onto it (bench/RESULTS.md): the pairs taught the label prior, not how to draft."""
    label = _draft_answer(records)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(pairs):
        a, b = label(p, "chosen"), label(p, "rejected")
        if a is not None and b is not None and a != b:
            groups.setdefault((a, b), []).append(i)
    dropped: set[int] = set()
    rng = random.Random(seed)
    for (a, b), ab in groups.items():
        k = len(groups.get((b, a), []))
        if len(ab) > k:
            order = rng.sample(ab, len(ab))  # seeded tie-break among equal margins
            order.sort(key=lambda i: pairs[i]["margin"], reverse=True)
            dropped.update(order[k:])
    return [p for i, p in enumerate(pairs) if i not in dropped]


def pair_labels(records: Iterable[dict[str, Any]], pairs: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """How often each answer is the chosen draft's and the rejected draft's: the label preference the pairs teach."""
    label = _draft_answer(records)
    out: dict[str, dict[str, int]] = {"chosen": {}, "rejected": {}}
    for p in pairs:
        for side in out:
            a = str(label(p, side))
            out[side][a] = out[side].get(a, 0) + 1
    return out


def _draft_answer(records: Iterable[dict[str, Any]]) -> Any:
    """``label(pair, side)``: the answer parsed from the pair's chosen or rejected draft (``draft_answers``), or None."""
    answer = {(str(r["id"]), d): a for r in records for d, a in zip(r["drafts"], r.get("draft_answers") or [])}
    return lambda p, side: answer.get((p["question_id"], p[side][-1]["content"]))


def pair_signal(records: Iterable[dict[str, Any]], pairs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the pairs ask DPO to learn, from each draft's own answer scored by the metric (``draft_scores``):
    how many pairs' chosen draft already answers better than the rejected one, as well, or worse. Pairs that
    differ only beyond the weak answer (``as_well``) are the ones about *how* to draft for the strong model.
    None when the records carry no draft scores (made before they were recorded)."""
    by_text: dict[str, dict[str, float]] = {}
    for rec in records:
        if rec.get("draft_scores") is None:
            return None
        by_text[str(rec["id"])] = dict(zip(rec["drafts"], rec["draft_scores"]))
    counts = {"chosen_answers_better": 0, "as_well": 0, "chosen_answers_worse": 0}
    for p in pairs:
        scores = by_text.get(str(p["question_id"]), {})
        c, r = scores.get(p["chosen"][-1]["content"]), scores.get(p["rejected"][-1]["content"])
        if c is None or r is None:
            continue
        counts["chosen_answers_better" if c > r else "as_well" if c == r else "chosen_answers_worse"] += 1
    n = sum(counts.values())
    return {**counts, "pairs": n, "share_as_well": round(counts["as_well"] / n, 4) if n else None}


def outcomes(records: Iterable[dict[str, Any]], rule: str = "all", min_margin: float = 0.0) -> dict[str, int]:
    """How many questions ended in each outcome (why a question gave no pair)."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for rec in records:
        counts[question_pairs(rec, rule, min_margin, None)[1]] += 1
    return counts


def _unique(items: list[tuple[str, float]]) -> list[tuple[str, float]]:
    seen: dict[str, float] = {}
    for text, d in items:
        seen.setdefault(text, d)
    return list(seen.items())


def _pair(record: dict[str, Any], c: tuple[str, float], r: tuple[str, float]) -> dict[str, Any]:
    return {
        "prompt": record["prompt"],
        "chosen": [{"role": "assistant", "content": c[0]}],
        "rejected": [{"role": "assistant", "content": r[0]}],
        "delta_chosen": c[1],
        "delta_rejected": r[1],
        "margin": c[1] - r[1],
        "question_id": str(record["id"]),
    }


def save_pairs(path: Path, pairs: list[dict[str, Any]]) -> None:
    """Write the pairs file align reads (:func:`cowest.rundir.load_pairs`): one JSON object a line."""
    write_text(path, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
