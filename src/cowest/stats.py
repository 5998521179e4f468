"""Paired comparisons of two systems on the same questions: bootstrap confidence intervals and the smallest
difference a given n could detect; and AUROC, how well a score separates right answers from wrong ones. Shared
by every stage that compares (eval, feedback validation, probes, the gate)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence


def resamples(n: int, n_resamples: int, seed: int) -> Iterator[list[int]]:
    """Seeded bootstrap draws of question indices, ``n`` with replacement each: the one resampling loop behind
    every CI here (paired differences, AUROC, the routing curve)."""
    rng = random.Random(seed)
    for _ in range(n_resamples):
        yield [rng.randrange(n) for _ in range(n)]


def percentile_interval(values: Sequence[float], alpha: float = 0.05) -> tuple[float, float] | None:
    """The (alpha/2, 1 - alpha/2) percentile interval of bootstrap ``values``; None when there are none."""
    if not values:
        return None
    v = sorted(values)
    return v[int(alpha / 2 * len(v))], v[min(len(v) - 1, int((1 - alpha / 2) * len(v)))]


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
    diffs = [stat([a[i] for i in idx]) - stat([b[i] for i in idx]) for idx in resamples(n, n_resamples, seed)]
    lo, hi = percentile_interval(diffs, alpha)  # type: ignore[misc]  # n_resamples >= 1
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


def wilson(k: int, n: int, *, alpha: float = 0.05, scale: float = 100.0) -> tuple[float, float, float] | None:
    """(k/n, low, high) in ``scale`` units (percent by default): the Wilson score interval for a proportion,
    which stays inside [0, 1] and keeps its coverage near 0 and 1, where the normal interval does not. None
    when n = 0 (no proportion to estimate)."""
    from statistics import NormalDist

    if not 0 <= k <= n:
        raise ValueError(f"a proportion needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return None
    z = NormalDist().inv_cdf(1 - alpha / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return scale * p, scale * max(0.0, centre - half), scale * min(1.0, centre + half)


def ranked(scores: Sequence[float | None]) -> list[float]:
    """Scores as floats for ranking, a missing one lowest."""
    return [-math.inf if s is None else float(s) for s in scores]


def auroc(scores: Sequence[float | None], right: Sequence[bool]) -> float:
    """P(a random right draft scores above a random wrong one), ties counting half; a missing score ranks
    lowest. nan when all drafts are right or all wrong (nothing to separate)."""
    vals = ranked(scores)
    n, n_pos = len(vals), sum(bool(r) for r in right)
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = sorted(range(n), key=lambda i: vals[i])
    ranks = [0.0] * n
    i = 0
    while i < n:  # mid-ranks for ties (Mann-Whitney U)
        j = i
        while j + 1 < n and vals[order[j + 1]] == vals[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, ok in zip(ranks, right) if ok)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auroc_ci(scores: Sequence[float | None], right: Sequence[bool], *, n_resamples: int = 1000, seed: int = 0,
             alpha: float = 0.05) -> tuple[float, float, float]:
    """(AUROC, low, high): percentile bootstrap over questions (resamples with one class only are skipped)."""
    est = auroc(scores, right)
    if est != est:
        return est, float("nan"), float("nan")
    got = [a for idx in resamples(len(scores), n_resamples, seed)
           if (a := auroc([scores[i] for i in idx], [right[i] for i in idx])) == a]  # nan: one class only
    lo, hi = percentile_interval(got, alpha) or (float("nan"), float("nan"))
    return est, lo, hi
