"""The gate's scores, threshold and calibration: hand-computable cases and a tiny real model."""

import json
import math

import pytest

from cowest.config import load_config
from cowest.errors import ConfigError
from cowest.inference import prompts
from cowest.inference.gate import Gate, calibrate, choose, draft_scores, threshold_for_share, to_strong
from cowest.tasks import get_task


@pytest.mark.parametrize("share,expected", [(0.0, 0), (0.3, 3), (0.5, 5), (0.75, 8), (1.0, 10)])
def test_threshold_sends_the_target_share(share, expected):
    scores = [0.05 * i + 0.01 for i in (7, 2, 9, 4, 0, 5, 1, 8, 3, 6)]
    thr = threshold_for_share(scores, share)
    sent = [s for s in scores if to_strong(s, thr)]
    assert len(sent) == expected
    assert all(s < min([x for x in scores if x not in sent], default=math.inf) for s in sent)  # the lowest go


def test_tied_scores_go_together_nearest_the_target():
    # agreement-like scores: 2 at 0, 5 at 0.5, 3 at 1 (n=10)
    scores = [0.0, 0.5, 1.0, 0.5, 0.0, 0.5, 1.0, 0.5, 0.5, 1.0]

    def sent(share):
        thr = threshold_for_share(scores, share)
        return sum(to_strong(s, thr) for s in scores)

    assert sent(0.2) == 2  # exact: the two zeros
    assert sent(0.3) == 2  # 2 (off by 1) is nearer 3 than 7 (off by 4)
    assert sent(0.5) == 7  # 7 (off by 2) is nearer 5 than 2 (off by 3)
    # 2 at 0, 4 at 0.5, 4 at 1: a target of 4 is 2 off both ways, and the tied group goes (quality first)
    even = [0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    thr = threshold_for_share(even, 0.4)
    assert sum(to_strong(s, thr) for s in even) == 6


def test_missing_scores_always_go_to_the_strong_model():
    scores = [None, 0.4, None, 0.9]
    thr = threshold_for_share(scores, 0.0)
    assert [to_strong(s, thr) for s in scores] == [True, False, True, False]
    assert Gate("answer_prob", 0.5, 0.5, "aligned").to_strong(None)


def test_choose_picks_the_best_auroc_or_the_configured_score():
    rows = [{"right": r, "scores": {"answer_prob": 0.6 + i / 100 if r else i / 100, "agreement": 0.5,
                                    "seq_logprob": -i / 10}}
            for i, r in enumerate([True, False, True, False, True, False, True, False])]
    auto = choose(rows, score="auto", share=0.5, n_resamples=50)
    assert auto["score"] == "answer_prob" and auto["aurocs"]["answer_prob"]["auroc"] == 1.0
    assert auto["aurocs"]["agreement"]["auroc"] == 0.5
    assert auto["calibrated_share"] == 0.5 and auto["right_when_kept"] == 1.0
    fixed = choose(rows, score="seq_logprob", share=0.25, n_resamples=50)
    assert fixed["score"] == "seq_logprob" and fixed["calibrated_share"] == 0.25
    all_right = choose([{**r, "right": True} for r in rows], score="auto", share=0.5, n_resamples=10)
    assert all_right["aurocs"]["answer_prob"]["auroc"] is None and all_right["notes"]
    assert all_right["score"] == "seq_logprob"  # the score every draft has


def test_gate_config_is_validated():
    with pytest.raises(ConfigError, match="answer_prob"):
        load_config(None, ["gate.score=entropy"])
    with pytest.raises(ConfigError, match=r"strong_share must be in \[0, 1\]"):
        load_config(None, ["gate.strong_share=1.5"])
    with pytest.raises(ConfigError, match="agreement_k"):
        load_config(None, ["gate.agreement_k=0"])
    with pytest.raises(ConfigError, match="strong_share"):  # an unknown key lists the valid ones
        load_config(None, ["gate.share=0.3"])


def test_draft_scores_with_a_real_tiny_model(tiny_model_dir):
    from cowest.models.weak import WeakModel

    cfg = load_config(None, ["task.name=demo", f"weak.model={tiny_model_dir}", "weak.max_new_tokens=8",
                             "weak.dtype=float32"])
    task = get_task(cfg.task)
    exs = task.load("dev")[:4]
    wm = WeakModel.load(cfg.weak)
    msgs = [prompts.weak_messages(task, ex, "cot") for ex in exs]
    texts = [o[0] for o in wm.generate(msgs)]
    answers = ["A", None, "C", "B"]  # a draft without an answer gets no answer_prob nor agreement
    sc = draft_scores(wm, task, msgs, exs, texts, answers, which=["answer_prob", "agreement", "seq_logprob"], k=3)
    assert sc["answer_prob"][1] is None and sc["agreement"][1] is None
    assert all(0.0 < p < 1.0 for p in sc["answer_prob"] if p is not None)
    assert all(a in (0.0, 1 / 3, 2 / 3, 1.0) for a in sc["agreement"] if a is not None)
    lps = wm.continuation_logprobs(msgs, [""] * 4, texts)
    assert sc["seq_logprob"] == pytest.approx([lp / n for lp, n in lps])
    assert all(v < 0 for v in sc["seq_logprob"])


def test_calibrate_writes_the_gate_once_and_recomputes_the_threshold(tmp_path, tiny_model_dir):
    from cowest.models.weak import WeakModel

    over = [f"output_dir={tmp_path}", "name=cal", "task.name=demo", "task.n_train=30", f"weak.model={tiny_model_dir}",
            "weak.max_new_tokens=8", "weak.dtype=float32", "gate.calibration_questions=10", "gate.agreement_k=2"]
    cfg = load_config(None, over)
    loads = []

    def load(kind):
        loads.append(kind)
        return WeakModel.load(cfg.weak)

    gate = calibrate(cfg, load, "sft")
    info = json.loads((cfg.run_dir / "gate" / "gate.json").read_text())
    rows = [json.loads(x) for x in (cfg.run_dir / "gate" / "calibration.jsonl").read_text().splitlines()]
    from cowest.tasks.splits import train_examples

    train_ids = {ex.id for ex in train_examples(cfg)[1]}  # the questions SFT and feedback train on
    assert loads == ["sft"] and info["n"] == len(rows) == 10 and not train_ids & {r["id"] for r in rows}
    assert all(r["id"].startswith("train-") for r in rows)  # training split, never the eval split
    assert all(r["gold"] in get_task(cfg.task).labels for r in rows) and 0 <= info["chance_right"] <= 1
    assert gate.score == info["score"] and gate.threshold == info["threshold"] and gate.model == "sft"
    # another target share reuses the drafts (no model load) and moves the threshold
    cfg2 = load_config(None, over + ["gate.strong_share=0.2", "gate.score=seq_logprob"])
    g2 = calibrate(cfg2, load, "sft")
    assert loads == ["sft"] and g2.score == "seq_logprob" and g2.strong_share == 0.2
    vals = [r["scores"]["seq_logprob"] for r in rows]
    assert sum(to_strong(v, g2.threshold) for v in vals) == 2
    # a different calibration (k) is refused without overwrite
    with pytest.raises(ConfigError, match="overwrite"):
        calibrate(load_config(None, over + ["gate.agreement_k=3"]), load, "sft")
