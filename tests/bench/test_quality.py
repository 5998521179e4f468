"""bench/quality.py reports run_eval's metrics, which are already in percent, as they are."""

from pathlib import Path

import pytest
from support.bench import load_bench

from cowest.config import load_config
from cowest.errors import ConfigError


def _quality():
    return load_bench("quality")


def _result():
    systems = {
        "collab": {"n": 64, "metrics": {"accuracy": 37.5, "macro_f1": 0.5}, "delta_vs_cowest": [0.0, -4.7, 4.7],
                   "unparsed": 0, "strong_calls_needed": 64, "strong_calls_paid": 64, "strong_tokens": 100},
        "cowest": {"n": 64, "metrics": {"accuracy": 37.5, "macro_f1": 36.7}, "unparsed": 0,
                   "strong_calls_needed": 64, "strong_calls_paid": 33, "strong_tokens": 50},
    }
    metrics = {"metric_names": ["accuracy", "macro_f1"], "primary_metric": "accuracy", "split": "dev", "n": 64,
               "systems": systems}
    return {"task": "medmcqa", "scale": "small", "command": "x", "date": "d", "machine": {}, "overrides": [],
            "wall_s": 60.0, "metrics": metrics, "feedback_stats": {}, "timings_s": {}}


def test_percentages_are_not_scaled_again(tmp_path):
    q = _quality()
    heights = q.plot(_result(), tmp_path / "p.png")
    assert heights == {"accuracy": [37.5, 37.5], "macro_f1": [0.5, 36.7]}
    md = q.summary_md(_result())
    assert "| collab | 64 | 37.5 | 0.5 |" in md and "3750" not in md and "50.0" not in md
    assert "strong calls needed | strong calls paid" in md and "| 64 | 33 |" in md


def test_feedback_table_names_the_evaluator_and_the_share_of_ties():
    r = _result()
    r["feedback_stats"] = {"round1": {"questions": 32, "drafts": 128, "chosen": 20, "rejected": 108, "pairs": 20,
                                      "questions_with_pairs": 13, "no_pair": {"all_rejected": 19},
                                      "strong_calls": 160, "strong_tokens": 4000, "evaluator": "metric",
                                      "delta_histogram": {"exactly_zero": 78}}}
    md = _quality().summary_md(r)
    assert "| evaluator | questions | drafts | chosen (Δ>0) | rejected (Δ≤0) | Δ = 0 |" in md
    assert "| metric | 32 | 128 | 20 | 108 | 61% | 13 |" in md


def test_the_validation_gain_has_its_own_table():
    r = _result()
    r["validation"] = {"round1": {"n": 64, "evaluator": "metric", "gain": [3.1, -1.6, 7.8], "detectable": 6.5,
                                  "metric": "accuracy", "metric_gain": [3.1, -1.6, 7.8], "metric_detectable": 6.5,
                                  "identical_share": 0.5, "strong_calls_paid": 96}}
    md = _quality().summary_md(r)
    assert "## Alignment gain on validation" in md
    assert "| round1 | 64 | metric: +3.1 [-1.6, +7.8] | 6.5 | accuracy: +3.1 [-1.6, +7.8] | 6.5 | 50% | 96 |" in md


def test_held_out_dpo_figures_and_the_evaluator_comparison_have_tables():
    r = _result()
    r["feedback_stats"] = {"round1": {"questions": 4, "drafts": 16, "chosen": 5, "rejected": 11, "pairs": 6,
                                      "questions_with_pairs": 2, "no_pair": {}, "strong_calls": 20,
                                      "strong_tokens": 900, "evaluator": "metric"}}
    r["evaluators"] = {"round1": [{"evaluator": "metric (em)", "drafts": 16, "delta_zero_share": 0.75,
                                   "questions_with_pairs": 1, "pairs": 3, "pairs_per_question": 0.75,
                                   "strong_requests_per_pair": 6.67, "mean_z": 0.25, "mean_collab": 0.3}]}
    r["align"] = {"round1": {"n_pairs": 6, "heldout": {"questions": 1, "pairs": 2, "step": 4,
                                                       "final": {"loss": 0.61234, "rewards/accuracies": 1.0,
                                                                 "rewards/margins": 0.2}}}}
    md = _quality().summary_md(r)
    assert "| metric (em) | 16 | 75.0% | 1/4 | 3 | 0.75 | 6.67 |" in md
    assert "## DPO on held-out questions' pairs" in md and "| round1 | 1 | 2 | 4 | 0.612 | 1 | 0.2 |" in md


def test_every_scale_is_a_valid_config_of_every_task_recipe():
    q = _quality()
    root = Path(__file__).resolve().parents[2]
    for task in q.TASKS:
        for scale, overrides in q.SCALES.items():
            cfg = load_config(root / "recipes" / f"{task}_cpu.yaml", overrides)
            assert cfg.task.name == task, scale
    cfg = load_config(root / "recipes" / "ifqa_cpu.yaml", q.SCALES["session"])
    assert "superICL" not in cfg.eval.systems and cfg.task.n_eval == 300
    with pytest.raises(ConfigError):
        load_config(root / "recipes" / "ifqa_cpu.yaml", q.SCALES["session"] + ["eval.systems=[weak,nope]"])


def test_overrides_may_follow_the_options(tmp_path, monkeypatch, capsys):
    q = _quality()
    monkeypatch.chdir(tmp_path)  # main() changes into ROOT; this puts the test's directory back afterwards
    (tmp_path / "project").mkdir()
    monkeypatch.setattr(q, "ROOT", tmp_path / "project")  # no ../shared/data beside it: main() stops after parsing
    assert q.main(["medmcqa", "--scale", "small", "task.n_eval=10", "--out", str(tmp_path / "o"), "a.b=1"]) == 0
    assert "skipping medmcqa: no data" in capsys.readouterr().out
