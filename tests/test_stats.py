import math

import pytest

from cowest.stats import auroc, auroc_ci, paired_bootstrap


def test_identical_systems_have_zero_difference():
    a = [1.0, 0.0, 1.0, 1.0]
    d, lo, hi = paired_bootstrap(a, a)
    assert (d, lo, hi) == (0.0, 0.0, 0.0)


def test_clear_difference_excludes_zero():
    a = [1.0] * 40 + [0.0] * 10  # 80 %
    b = [0.0] * 40 + [0.0] * 10  # 0 %
    d, lo, hi = paired_bootstrap(a, b, seed=1)
    assert d == 80.0
    assert 60.0 < lo <= d <= hi <= 100.0


def test_noise_interval_contains_zero():
    a = [1.0, 0.0] * 20
    b = [0.0, 1.0] * 20
    d, lo, hi = paired_bootstrap(a, b, seed=3)
    assert d == 0.0 and lo < 0.0 < hi


def test_min_detectable_difference_matches_the_normal_formula():
    from statistics import NormalDist

    from cowest.stats import min_detectable_difference

    # 100 questions: 10 won, 10 lost, 80 tied -> sd of the differences = sqrt(20/99)
    a = [1.0] * 10 + [0.0] * 10 + [1.0] * 80
    b = [0.0] * 10 + [1.0] * 10 + [1.0] * 80
    z = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)
    assert abs(min_detectable_difference(a, b) - 100 * z * (20 / 99 / 100) ** 0.5) < 1e-9
    # four times the questions with the same disagreement pattern: about half the detectable difference
    assert abs(min_detectable_difference(a * 4, b * 4) / min_detectable_difference(a, b) - 0.5) < 0.01


def test_min_detectable_difference_never_claims_zero():
    from cowest.stats import min_detectable_difference

    same = [1.0, 0.0] * 10
    assert min_detectable_difference(same, same) > 0  # no disagreement seen: still one question in n
    assert min_detectable_difference([1.0], [0.0]) != min_detectable_difference([1.0], [0.0])  # nan for n < 2


def test_auroc_of_known_rankings():
    right = [True, True, False, False]
    assert auroc([0.9, 0.8, 0.2, 0.1], right) == 1.0  # perfect separation
    assert auroc([0.1, 0.2, 0.8, 0.9], right) == 0.0  # perfectly backwards
    assert auroc([0.5, 0.5, 0.5, 0.5], right) == 0.5  # all ties count half
    # pairs (right, wrong): (0.9, 0.7) yes, (0.9, None) yes, (0.6, 0.7) no, (0.6, None) yes: 3/4
    assert auroc([0.9, 0.6, 0.7, None], right) == pytest.approx(0.75)
    assert math.isnan(auroc([0.1, 0.2], [True, True]))  # nothing to separate


def test_auroc_ci_brackets_the_estimate():
    scores = [i / 20 for i in range(20)]
    right = [i >= 8 or i % 5 == 0 for i in range(20)]
    est, lo, hi = auroc_ci(scores, right, n_resamples=300)
    assert est == pytest.approx(auroc(scores, right)) and lo <= est <= hi and lo < hi
