"""Paired bootstrap confidence intervals for the difference between two systems on the same questions."""

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
