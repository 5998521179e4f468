"""Answer metrics: SQuAD exact match and token F1 for free-form answers, accuracy and macro-F1 for
closed label sets. Per-item scores are in [0, 1]; corpus metrics are in percent.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop punctuation and the articles a/an/the, squeeze spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str | None, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer, else 0.0."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    # SQuAD v2 rule: when either side normalises to nothing, F1 is 1 only if both do.
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str | None, golds: Sequence[str]) -> float:
    """Best token-overlap F1 between the prediction and any gold answer, after normalisation."""
    if prediction is None or not golds:
        return 0.0
    pred_tokens = normalize_answer(prediction).split()
    return max(_f1(pred_tokens, normalize_answer(g).split()) for g in golds)


def mean_percent(values: Sequence[float]) -> float:
    """The mean of per-item scores in [0, 1], as a percentage (0.0 for no items)."""
    return 100.0 * sum(values) / len(values) if values else 0.0


def accuracy(predictions: Sequence[str | None], golds: Sequence[str]) -> float:
    """Percent of predictions equal to their gold label (None is always wrong)."""
    _check_lengths(predictions, golds)
    return mean_percent([float(p is not None and p == g) for p, g in zip(predictions, golds)])


def macro_f1(predictions: Sequence[str | None], golds: Sequence[str], labels: Sequence[str]) -> float:
    """Unweighted mean of per-label F1 over ``labels``, in percent.

    Matches sklearn ``f1_score(labels=labels, average="macro", zero_division=0)``: every label in
    ``labels`` counts, even one never predicted or never gold (its F1 is then 0), and a prediction
    outside ``labels`` (None: unparsable) is a false negative for the gold label and a false positive
    for none.
    """
    _check_lengths(predictions, golds)
    if not labels:
        raise ValueError("macro_f1 needs a non-empty label set")
    scores = []
    for label in labels:
        tp = sum(1 for p, g in zip(predictions, golds) if p == label and g == label)
        fp = sum(1 for p, g in zip(predictions, golds) if p == label and g != label)
        fn = sum(1 for p, g in zip(predictions, golds) if p != label and g == label)
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return 100.0 * sum(scores) / len(scores)


def _check_lengths(predictions: Sequence[object], golds: Sequence[object]) -> None:
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} gold answers")
