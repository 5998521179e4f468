import pytest

from cowest.tasks.metrics import (
    accuracy,
    exact_match,
    macro_f1,
    mean_percent,
    normalize_answer,
    token_f1,
)


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  an   apple, a day ", "apple day"),
        ("Theatre", "theatre"),  # 'the' only as a whole word
        ("U.S.A.", "usa"),
        ("A", ""),
    ],
)
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_exact_match_best_over_golds_and_none():
    assert exact_match("the Fixed exchange-rate system.", ["floating", "fixed exchangerate system"]) == 1.0
    assert exact_match("fixed exchange rate", ["fixed exchange rate system"]) == 0.0
    assert exact_match(None, ["x"]) == 0.0


def test_token_f1_hand_worked():
    # pred "fixed exchange rate" (3 tokens), gold "fixed exchange rate system" (4 tokens):
    # overlap 3 -> P = 3/3, R = 3/4, F1 = 2*1*0.75/1.75 = 6/7
    assert token_f1("fixed exchange rate", ["fixed exchange rate system"]) == pytest.approx(6 / 7)
    # best over golds: vs "rate" overlap 1, P = 1/3, R = 1 -> F1 = 0.5; vs 2nd gold F1 = 6/7
    assert token_f1("fixed exchange rate", ["rate", "fixed exchange rate system"]) == pytest.approx(6 / 7)
    # a repeated token matches only as often as it occurs in gold: pred [x, b, b], gold [b, c]
    # -> overlap 1, P = 1/3, R = 1/2, F1 = 2*(1/6)/(5/6) = 0.4
    assert token_f1("x b b", ["b c"]) == pytest.approx(0.4)
    assert token_f1("paris", ["london"]) == 0.0
    assert token_f1(None, ["london"]) == 0.0
    # both normalise to nothing -> 1; only one does -> 0
    assert token_f1("the", ["a"]) == 1.0
    assert token_f1("the", ["paris"]) == 0.0


def test_mean_percent():
    assert mean_percent([1.0, 0.0, 0.5, 0.5]) == 50.0
    assert mean_percent([]) == 0.0


def test_accuracy_percent_and_none_is_wrong():
    # 2 right of 4 -> 50 %
    assert accuracy(["A", "B", None, "D"], ["A", "B", "C", "C"]) == 50.0
    with pytest.raises(ValueError):
        accuracy(["A"], ["A", "B"])


def test_macro_f1_label_never_predicted():
    labels = ["A", "B", "C", "D"]
    preds = ["A", "A", "B", "B", "C", "A"]
    golds = ["A", "B", "B", "C", "C", "D"]
    # A: tp 1 (i0), fp 2 (i1, i5), fn 0 -> 2/(2+2+0) = 0.5
    # B: tp 1 (i2), fp 1 (i3), fn 1 (i1) -> 2/(2+1+1) = 0.5
    # C: tp 1 (i4), fp 0, fn 1 (i3) -> 2/(2+0+1) = 2/3
    # D: tp 0, fp 0, fn 1 (i5) -> 0
    # macro = (0.5 + 0.5 + 2/3 + 0) / 4 = 5/12 -> 41.666...%
    assert macro_f1(preds, golds, labels) == pytest.approx(100 * 5 / 12)


def test_macro_f1_with_none_predictions():
    labels = ["A", "B"]
    preds = [None, "A", None, "B"]
    golds = ["A", "A", "B", "B"]
    # None is a miss for the gold label and a false positive for nobody.
    # A: tp 1, fp 0, fn 1 -> 2/3 ; B: tp 1, fp 0, fn 1 -> 2/3 ; macro = 2/3
    assert macro_f1(preds, golds, labels) == pytest.approx(100 * 2 / 3)
    # accuracy on the same data: 2/4
    assert accuracy(preds, golds) == 50.0


def test_macro_f1_label_absent_from_gold_and_preds_counts_as_zero():
    # label C never appears: its F1 is 0 (zero_division=0); A and B are perfect -> (1+1+0)/3
    assert macro_f1(["A", "B"], ["A", "B"], ["A", "B", "C"]) == pytest.approx(100 * 2 / 3)


def test_macro_f1_prediction_outside_labels_is_only_a_miss():
    # "E" is not a label: A has tp 0, fp 0, fn 1 -> 0 ; B: tp 1 -> 1 ; macro 0.5
    assert macro_f1(["E", "B"], ["A", "B"], ["A", "B"]) == pytest.approx(50.0)


def test_macro_f1_needs_labels():
    with pytest.raises(ValueError):
        macro_f1(["A"], ["A"], [])
