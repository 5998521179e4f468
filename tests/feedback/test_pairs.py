import pytest

from cowest.errors import ConfigError
from cowest.feedback.pairs import (balance_labels, check_pairing, make_pairs, outcomes, pair_labels, pair_signal,
                                   question_pairs)

PROMPT = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]


def rec(qid, drafts, deltas):
    return {"id": qid, "prompt": PROMPT, "drafts": drafts, "deltas": deltas}


def texts(pairs):
    return [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs]


def test_pairs_follow_the_sign_of_delta():
    r = rec("q1", ["good", "bad", "tie", "great"], [0.5, -0.5, 0.0, 1.0])
    pairs, why = question_pairs(r, "all")
    assert why == "paired"
    for p in pairs:
        assert p["delta_chosen"] > 0 >= p["delta_rejected"]
        assert p["margin"] == pytest.approx(p["delta_chosen"] - p["delta_rejected"])
        assert p["prompt"] == PROMPT and p["question_id"] == "q1"
        assert p["chosen"][0]["role"] == "assistant" and p["rejected"][0]["role"] == "assistant"
    # Δ = 0 is rejected (it did not beat the strong model alone)
    assert set(texts(pairs)) == {("good", "bad"), ("good", "tie"), ("great", "bad"), ("great", "tie")}
    assert texts(pairs)[0] == ("great", "bad")  # largest margin first


def test_one_sided_questions_give_no_pairs():
    assert question_pairs(rec("a", ["x", "y"], [0.3, 0.1]), "all") == ([], "all_chosen")
    assert question_pairs(rec("b", ["x", "y"], [0.0, -0.2]), "all") == ([], "all_rejected")
    assert question_pairs(rec("c", ["x", "y"], [None, None]), "all") == ([], "unparseable")
    # a missing score is excluded, so the rest is one-sided
    assert question_pairs(rec("d", ["x", "y"], [0.4, None]), "all") == ([], "all_chosen")


def test_best_worst_gives_one_pair_of_extremes():
    r = rec("q", ["a", "b", "c", "d"], [0.2, 0.9, -0.1, -0.7])
    pairs, _ = question_pairs(r, "best_worst")
    assert texts(pairs) == [("b", "d")]
    assert pairs[0]["margin"] == pytest.approx(1.6)


def test_min_margin_filters_pairs():
    r = rec("q", ["a", "b", "c"], [0.2, 0.0, -0.5])
    pairs, _ = question_pairs(r, "all", min_margin=0.5)
    assert texts(pairs) == [("a", "c")]
    assert question_pairs(r, "all", min_margin=0.9) == ([], "below_margin")


def test_max_per_question_and_max_total_caps():
    r1 = rec("q1", ["a", "b", "c", "d"], [1.0, 0.5, -0.5, -1.0])
    r2 = rec("q2", ["e", "f", "g", "h"], [1.0, 0.5, -0.5, -1.0])
    assert len(make_pairs([r1], "all", max_per_question=None)) == 4
    capped = make_pairs([r1], "all", max_per_question=2)
    assert texts(capped) == [("a", "d"), ("a", "c")] or texts(capped) == [("a", "d"), ("b", "d")]
    assert capped[0]["margin"] == 2.0
    total = make_pairs([r1, r2], "all", max_per_question=4, max_total=3, seed=1)
    assert len(total) == 3
    assert total == make_pairs([r1, r2], "all", max_per_question=4, max_total=3, seed=1)  # seeded


def test_duplicate_drafts_never_pair_with_themselves():
    # the same text sampled twice (identical Δ) counts once; it can never be both chosen and rejected
    r = rec("q", ["same", "same", "other"], [0.5, 0.5, -0.5])
    pairs, _ = question_pairs(r, "all")
    assert texts(pairs) == [("same", "other")]
    for p in make_pairs([r], "all"):
        assert p["chosen"][0]["content"] != p["rejected"][0]["content"]


def test_outcome_counts():
    recs = [
        rec("1", ["a", "b"], [1.0, 0.0]),
        rec("2", ["a", "b"], [1.0, 1.0]),
        rec("3", ["a", "b"], [0.0, 0.0]),
        rec("4", ["a", "b"], [None, None]),
        rec("5", ["a", "b"], [0.1, 0.0]),
    ]
    assert outcomes(recs, "all", min_margin=0.5) == {
        "paired": 1, "all_chosen": 1, "all_rejected": 1, "below_margin": 1, "answers_differ": 0, "unparseable": 1,
    }


def test_unknown_rule_is_an_error():
    with pytest.raises(ValueError):
        question_pairs(rec("q", ["a", "b"], [1.0, -1.0]), "random")


def test_pair_signal_sorts_pairs_by_the_drafts_own_answers():
    r = rec("q1", ["right, helps", "wrong, helps", "wrong, misleads", "right, misleads"], [1.0, 0.5, -1.0, 0.0])
    r["draft_scores"] = [1.0, 0.0, 0.0, 1.0]
    sig = pair_signal([r], make_pairs([r], "all", 0.0, None))
    # chosen {right+, wrong+} x rejected {wrong-, right-}: better, as well, as well, worse
    assert sig == {"chosen_answers_better": 1, "as_well": 2, "chosen_answers_worse": 1, "pairs": 4,
                   "share_as_well": 0.5}
    assert pair_signal([rec("q1", ["a"], [1.0])], []) is None  # records made before draft scores


def test_as_well_keeps_only_pairs_whose_drafts_answer_alike():
    r = rec("q1", ["right, helps", "wrong, helps", "wrong, misleads", "right, misleads"], [1.0, 0.5, -1.0, 0.0])
    r["draft_scores"] = [1.0, 0.0, 0.0, 1.0]
    pairs, why = question_pairs(r, "as_well")
    assert why == "paired" and set(texts(pairs)) == {("right, helps", "right, misleads"),
                                                     ("wrong, helps", "wrong, misleads")}
    assert pair_signal([r], pairs)["as_well"] == 2 == pair_signal([r], pairs)["pairs"]
    r["draft_scores"] = [1.0, 1.0, 0.0, 0.0]  # every chosen draft answers right, every rejected one wrong
    assert question_pairs(r, "as_well") == ([], "answers_differ")
    with pytest.raises(ValueError, match="draft_scores|own scores"):
        question_pairs(rec("q2", ["a", "b"], [1.0, 0.0]), "as_well")


def labelled(qid, drafts_deltas_labels):
    drafts, deltas, answers = zip(*drafts_deltas_labels)
    return {**rec(qid, list(drafts), list(deltas)), "draft_answers": list(answers)}


def test_label_balanced_pairs_prefer_no_label_overall():
    records = [
        # three questions whose pairs prefer "caution" over "intervention", one the other way round
        labelled("q1", [("c1", 1.0, "caution"), ("i1", -1.0, "intervention")]),
        labelled("q2", [("c2", 1.0, "caution"), ("i2", 0.0, "intervention")]),
        labelled("q3", [("c3", 0.5, "caution"), ("i3", 0.0, "intervention")]),
        labelled("q4", [("i4", 1.0, "intervention"), ("c4", 0.0, "caution")]),
        # same label on both sides, and an unreadable rejected draft: no label preference, kept
        labelled("q5", [("c5a", 1.0, "caution"), ("c5b", 0.0, "caution"), ("junk", -1.0, None)]),
    ]
    every = make_pairs(records, "all", 0.0, None)
    assert pair_labels(records, every)["chosen"] == {"caution": 5, "intervention": 1}
    kept = make_pairs(records, "label_balanced", 0.0, None)
    assert set(texts(kept)) == {("c1", "i1"), ("i4", "c4"), ("c5a", "c5b"), ("c5a", "junk")}  # q1: largest margin
    counts = pair_labels(records, kept)
    assert counts["chosen"] == {"caution": 3, "intervention": 1}
    assert counts["rejected"] == {"intervention": 1, "caution": 2, "None": 1}
    # no direction is preferred over its reverse once the same-label and unreadable pairs are set aside
    assert balance_labels(records, kept) == kept
    assert balance_labels(records[:3], make_pairs(records[:3], "all", 0.0, None)) == []  # one direction only


def test_label_balanced_needs_a_task_with_labels():
    check_pairing("label_balanced", ("A", "B", "C", "D"))
    check_pairing("all", None)
    with pytest.raises(ConfigError, match="free-form.*all, best_worst or as_well"):
        check_pairing("label_balanced", None)


def test_ranked_pairs_any_higher_delta_over_a_lower_one_whatever_the_signs():
    # graded feedback: every draft raised p(gold), by different amounts; the sign split finds no pair
    r = rec("q1", ["most", "some", "least", "least"], [0.30, 0.10, 0.02, 0.02])
    assert question_pairs(r, "all") == ([], "all_chosen")
    pairs, why = question_pairs(r, "ranked")
    assert why == "paired" and texts(pairs) == [("most", "least"), ("most", "some"), ("some", "least")]
    assert [p["margin"] for p in pairs] == pytest.approx([0.28, 0.20, 0.08])  # largest first
    assert texts(question_pairs(r, "ranked", min_margin=0.1)[0]) == [("most", "least"), ("most", "some")]
    assert texts(question_pairs(r, "ranked", max_per_question=1)[0]) == [("most", "least")]
    # with 0/1 feedback it also prefers a draft that does not mislead (0) over one that does (-1)
    r01 = rec("q2", ["helps", "neutral", "misleads"], [1.0, 0.0, -1.0])
    assert set(texts(question_pairs(r01, "ranked")[0])) == set(texts(question_pairs(r01, "all")[0])) | {
        ("neutral", "misleads")}
    assert question_pairs(rec("q3", ["a", "b"], [0.2, 0.2]), "ranked") == ([], "below_margin")  # nothing to prefer
    assert outcomes([r, r01], "ranked")["paired"] == 2


def test_label_balanced_pairs_from_a_generator_of_records():
    # one direction only: balancing drops the pair, also when the records come as a one-pass iterator
    records = [labelled("q1", [("c1", 1.0, "caution"), ("i1", -1.0, "intervention")])]
    assert make_pairs(records, "label_balanced", 0.0, None) == []
    assert make_pairs(iter(records), "label_balanced", 0.0, None) == []
