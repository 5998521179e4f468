"""Paired comparisons of two systems on the same questions: bootstrap confidence intervals and the smallest
difference a given n could detect. Shared by every stage that compares (eval, feedback validation, probes)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    stat: Callable[[Sequence[float]], float] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """(observed difference, low, high) of ``stat(a) - stat(b)`` with a percentile CI.

    ``a`` and ``b`` are per-question scores of two systems on the same questions (same order);
    each resample draws question indices with replacement and scores both systems on that draw.
    """
    if len(a) != len(b):
        raise ValueError("paired bootstrap needs scores for the same questions")
    n = len(a)
    stat = stat or (lambda xs: 100.0 * sum(xs) / len(xs) if xs else 0.0)
    observed = stat(a) - stat(b)
    if n == 0:
        return observed, float("nan"), float("nan")
    rng = random.Random(seed)
    diffs = []
    for _ in range(n_resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        diffs.append(stat([a[i] for i in idx]) - stat([b[i] for i in idx]))
    diffs.sort()
    lo = diffs[int((alpha / 2) * n_resamples)]
    hi = diffs[min(n_resamples - 1, int((1 - alpha / 2) * n_resamples))]
    return observed, lo, hi


def min_detectable_difference(a: Sequence[float], b: Sequence[float], *, alpha: float = 0.05,
                              power: float = 0.8, scale: float = 100.0) -> float:
    """The smallest true difference in means (in ``scale`` units: points for 0/1 scores) that a paired
    two-sided test at level ``alpha`` would detect with probability ``power`` on these n questions:
    (z_{1-alpha/2} + z_{power}) * sd(a - b) / sqrt(n), the normal approximation.

    The per-question differences' spread is what sets it: two systems that mostly agree can be told apart
    at a smaller n than two that disagree often. With no observed disagreement (sd = 0) it uses one
    disagreeing question in n, so a tiny n never claims a tiny detectable difference. nan for n < 2."""
    from statistics import NormalDist

    if len(a) != len(b):
        raise ValueError("paired differences need scores for the same questions")
    n = len(a)
    if n < 2:
        return float("nan")
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1)
    if var == 0:
        var = 1.0 / n  # one question in n differing by 1
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return scale * z * (var / n) ** 0.5
