"""gate_check: the drafts against answers that ignore the question, the out-of-bag AUROC of an auto-chosen score,
and the notes that tell a user the gate has nothing to route on."""

import random

import pytest

from cowest.config import GATE_SCORES
from cowest.inference.gate import choose
from cowest.inference.gate_check import chance_right, check, out_of_bag_auroc, right_minus_chance
from cowest.stats import auroc


def _rows(n, *, knows, seed=0, signal=False):
    """n closed-task rows: the draft's answer is the gold label with probability ``knows``, else one of four at
    random. With ``signal`` answer_prob is high exactly on the right drafts; the other scores are noise."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        gold = rng.choice("ABCD")
        answer = gold if rng.random() < knows else rng.choice("ABCD")
        right = answer == gold
        rows.append({"answer": answer, "gold": gold, "right": right,
                     "scores": {"answer_prob": (0.9 if right else 0.3) if signal else rng.random(),
                                "agreement": rng.choice([0.25, 0.5, 0.75, 1.0]), "seq_logprob": -rng.random()}})
    return rows


def test_chance_right_by_hand():
    # P(answer): A 2/4, B 1/4 (None is never right); P(gold): A 2/4, B 2/4 -> 2/4*2/4 + 1/4*2/4 = 0.375
    assert chance_right(["A", "A", "B", None], ["A", "B", "B", "A"]) == pytest.approx(0.375)
    # always answering the majority label is right exactly as often as that label is gold
    assert chance_right(["C"] * 5, ["C", "C", "C", "A", "B"]) == pytest.approx(0.6)


def test_drafts_that_ignore_the_question_are_no_better_than_chance():
    guess = _rows(300, knows=0.0)
    share, chance, lo, hi = right_minus_chance(guess, n_resamples=300)
    assert lo < 0 < hi and abs(share - chance) < 0.06
    informed = _rows(300, knows=0.6)
    share, chance, lo, hi = right_minus_chance(informed, n_resamples=300)
    assert share > 0.6 and 0 < lo <= share - chance <= hi


def test_the_best_of_noise_scores_is_optimistic_in_sample_and_not_out_of_bag():
    rows = _rows(120, knows=0.3, seed=3)
    right = [r["right"] for r in rows]
    in_sample = max(auroc([r["scores"][k] for r in rows], right) for k in GATE_SCORES)
    oob = out_of_bag_auroc(rows, GATE_SCORES, n_resamples=200)
    assert oob < in_sample and abs(oob - 0.5) < 0.08
    clear = _rows(120, knows=0.3, seed=3, signal=True)
    assert out_of_bag_auroc(clear, GATE_SCORES, n_resamples=200) == pytest.approx(1.0)


def test_check_notes_each_failed_check_and_only_those():
    noise = _rows(200, knows=0.0, seed=1)
    info = choose(noise, score="auto", share=0.5, n_resamples=200)
    figures, notes = check(noise, info["aurocs"], info["score"], auto=True, names=GATE_SCORES, n_resamples=200)
    assert set(figures) == {"chance_right", "right_minus_chance", "chosen_auroc_out_of_bag"}
    text = " ".join(notes)
    assert "ignore the question" in text and "optimistic" in text and "includes 0.5" in text
    clear = _rows(200, knows=0.6, seed=1, signal=True)
    aurocs = choose(clear, score="answer_prob", share=0.5, n_resamples=200)["aurocs"]
    figures, notes = check(clear, aurocs, "answer_prob", auto=False, names=GATE_SCORES, n_resamples=200)
    assert notes == [] and "chosen_auroc_out_of_bag" not in figures  # a configured score was not chosen here
    figures, notes = check(clear, aurocs, "answer_prob", auto=True, names=GATE_SCORES, n_resamples=200)
    assert figures["chosen_auroc_out_of_bag"] == pytest.approx(1.0) and notes == []  # chosen, and it holds up


def test_choose_reports_the_checks_and_skips_chance_without_gold_labels():
    rows = _rows(80, knows=0.0, seed=2)
    info = choose(rows, score="auto", share=0.5, n_resamples=100)
    assert 0 <= info["chance_right"] <= 1 and len(info["right_minus_chance"]) == 3
    assert any("ignore the question" in n for n in info["notes"])
    free_form = [{k: v for k, v in r.items() if k != "gold"} for r in rows]  # e.g. IfQA: no label set
    info = choose(free_form, score="auto", share=0.5, n_resamples=100)
    assert "chance_right" not in info and not any("ignore the question" in n for n in info["notes"])


def test_transfer_note_when_the_eval_auroc_falls_below_what_calibration_promised():
    from cowest.inference.gate_check import transfer_note

    info = {"score": "seq_logprob", "aurocs": {"seq_logprob": {"auroc": 0.84}}, "chosen_auroc_out_of_bag": 0.83}
    note = transfer_note(info, [0.60, 0.52, 0.67])  # IfQA's dev questions against its held-out training questions
    assert note and "0.60 [0.52, 0.67] against 0.83" in note  # out of bag where measured
    assert transfer_note(info, [0.78, 0.70, 0.86]) is None  # the CI reaches the promise: nothing to say
    assert "against 0.84" in transfer_note({**info, "chosen_auroc_out_of_bag": None}, [0.60, 0.52, 0.67])
    fixed = {"score": "seq_logprob", "aurocs": {"seq_logprob": {"auroc": 0.75}}}  # a configured score: in sample
    assert "against 0.75" in transfer_note(fixed, [0.60, 0.52, 0.67])
    assert transfer_note(info, None) is None and transfer_note({}, [0.6, 0.5, 0.7]) is None
