from cowest.eval.stats import paired_bootstrap


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
