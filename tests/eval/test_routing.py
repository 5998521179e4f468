"""The routing curve and its figures on hand-made cases, and the gated systems end to end through `run_eval`
(tiny random weak model, the package's OpenAI test server as the strong model)."""

import json
import shutil

import pytest

from cowest.config import load_config
from cowest.eval.evaluate import run_eval
from cowest.eval.routing import analyse, curve, figures, markdown, one_line
from cowest.testing.openai_server import OpenAITestServer


def test_curve_sends_the_lowest_confidence_first():
    # confidences 0.9, 0.1, 0.5, None: order None(3), 0.1(1), 0.5(2), 0.9(0)
    conf = [0.9, 0.1, 0.5, None]
    weak = [1, 0, 0, 0]
    strong = [1, 1, 1, 0]
    assert curve(conf, weak, strong) == [25.0, 25.0, 50.0, 75.0, 75.0]


def test_apgr_and_cpt_of_a_constructed_curve():
    # 10 questions, weak 0 everywhere, strong right on all: quality k*10 -> PGR(s) = s (the random line)
    cv = [10.0 * k for k in range(11)]
    f = figures(cv)
    assert f["gap"] == 100.0
    assert f["apgr"] == pytest.approx(0.55)  # (0.1 + ... + 1.0) / 10
    assert f["cpt50"] == pytest.approx(0.5) and f["cpt80"] == pytest.approx(0.8)
    # a perfect gate on 10 questions where only 2 need the strong model: the gap is recovered by 20%
    cv = [80.0, 90.0, 100.0] + [100.0] * 8
    f = figures(cv)
    assert f["apgr"] == pytest.approx((0.5 + 1.0 * 9) / 10)  # share 0.1 -> k=1 (PGR 0.5), then 1.0
    assert f["cpt50"] == pytest.approx(0.1)  # exactly 1 question of 10
    assert f["cpt80"] == pytest.approx(0.2)


def test_no_gap_gives_no_ratios():
    for cv in ([50.0, 50.0, 50.0], [60.0, 55.0, 40.0]):
        f = figures(cv)
        assert f["gap"] <= 0 and f["apgr"] is None and f["cpt50"] is None and f["cpt80"] is None


def test_analyse_reports_a_negative_gap_plainly():
    ids = [str(i) for i in range(6)]
    routed = [{"id": i, "confidence": float(i), "weak_scores": {"accuracy": 1.0}, "scores": {"accuracy": 1.0},
               "route": "weak"} for i in ids]
    cowest = [{"id": i, "scores": {"accuracy": float(int(i) % 2)}} for i in ids]
    r = analyse({"routed": routed, "cowest": cowest}, ids, "accuracy", partner="cowest", n_resamples=50)
    assert r["gap"] == pytest.approx(-50.0) and r["apgr"] is None
    assert "not better than the weak draft alone" in markdown(r)
    assert "APGR/CPT undefined" in one_line(r)
    assert r["comparisons"]["routed - cowest"]["delta"][0] == pytest.approx(50.0)
    # a gate that separated its calibration drafts better than these: the section says it may not carry over
    r["gate"] = {"score": "seq_logprob", "threshold": -0.1, "n": 100, "strong_share": 0.5, "model": "aligned",
                 "aurocs": {"seq_logprob": {"auroc": 0.84, "ci": [0.73, 0.93]}}, "chosen_auroc_out_of_bag": 0.83}
    r["eval_auroc"] = [0.60, 0.52, 0.67]
    assert "less than the calibration questions' (0.60 [0.52, 0.67] against 0.83)" in markdown(r)


def _cfg(tmp_path, tiny_model_dir, base_url, *extra):
    return load_config(None, [
        f"output_dir={tmp_path}", "name=gated", "task.name=demo", "task.n_train=40", "task.n_eval=10",
        f"weak.model={tiny_model_dir}", "weak.max_new_tokens=8", "weak.dtype=float32", f"strong.base_url={base_url}",
        "strong.api_key_env=null", "strong.max_concurrency=3", "gate.calibration_questions=12", "gate.agreement_k=2",
        "gate.strong_share=0.4", "gate.score=seq_logprob", "eval.systems=[weak,routed,random_gate]", *extra,
    ])


def _rows(cfg, system):
    return [json.loads(x) for x in (cfg.run_dir / "eval" / "predictions" / f"{system}.jsonl").read_text().splitlines()]


def answer_by_length(messages, body):
    text = messages[-1]["content"]
    return "Reasoning.\nAnswer: " + "ABCD"[len(text) % 4]


def test_routed_and_random_gate_end_to_end_cost_no_new_calls(tmp_path, tiny_model_dir):
    with OpenAITestServer(answer_by_length) as srv:
        cfg = _cfg(tmp_path, tiny_model_dir, srv.base_url)
        summary = run_eval(cfg, show=False)
        calls = srv.outcomes["ok"]
    systems = summary["systems"]
    # no aligned round: the gate drafts with the SFT (here base) model and routes to collab, which eval adds
    assert "collab" in systems and "SFT" in summary["notes"]["gate"]
    assert calls == 10  # collab's calls only: routed and random_gate are answered from the cache
    gate = json.loads((cfg.run_dir / "gate" / "gate.json").read_text())
    assert gate["n"] <= 12 and gate["model"] == "sft" and set(gate["aurocs"]) == {"answer_prob", "agreement",
                                                                                 "seq_logprob"}
    routed, rnd, collab = _rows(cfg, "routed"), _rows(cfg, "random_gate"), {r["id"]: r for r in _rows(cfg, "collab")}
    sent = [r for r in routed if r["route"] == "strong"]
    assert 0 < len(sent) < 10  # both routes taken
    assert systems["routed"]["strong_calls_needed"] == len(sent)
    assert systems["routed"]["strong_calls_paid"] == 0 and systems["random_gate"]["strong_calls_paid"] == 0
    assert sum(r["route"] == "strong" for r in rnd) == len(sent)  # the same share
    for r in routed:
        kept = r["route"] == "weak"
        assert (r["confidence"] is not None and r["confidence"] >= gate["threshold"]) if kept else \
            (r["confidence"] is None or r["confidence"] < gate["threshold"])
        assert r["weak_draft"] == collab[r["id"]]["weak_draft"]  # the partner's own drafts
        assert r["prediction"] == (r["weak_prediction"] if kept else collab[r["id"]]["prediction"])
    route = summary["routing"]
    assert route["partner"] == "collab" and len(route["curve"]) == 11 and len(route["grid"]) == 11
    assert route["curve"][0] == pytest.approx(100 * sum(r["weak_scores"]["accuracy"] for r in routed) / 10)
    assert route["curve"][-1] == pytest.approx(systems["collab"]["metrics"]["accuracy"])
    assert route["points"]["routed"]["share"] == pytest.approx(len(sent) / 10)
    from cowest.stats import auroc

    ea = auroc([r["confidence"] for r in routed], [r["weak_scores"]["accuracy"] == 1.0 for r in routed])
    assert (route["eval_auroc"] is None) if ea != ea else route["eval_auroc"][0] == pytest.approx(ea)
    for name in ("routing.png", "report.md", "metrics.json"):
        assert (cfg.run_dir / "eval" / name).exists()
    report = (cfg.run_dir / "eval" / "report.md").read_text()
    assert "## Routing" in report and "calibration checks: drafts right" in report  # the demo is a closed task

    # a rerun resumes: no new drafts of the calibration (same fingerprint), no new calls
    with OpenAITestServer(answer_by_length) as srv:
        cfg.strong.base_url = srv.base_url
        again = run_eval(cfg, show=False)
        assert srv.outcomes["ok"] == 0
    assert again["routing"]["curve"] == route["curve"]
    # gate/ removed after the predictions were made: the gate is calibrated again (the same one) for the report
    shutil.rmtree(cfg.run_dir / "gate")
    with OpenAITestServer(answer_by_length) as srv:
        cfg.strong.base_url = srv.base_url
        third = run_eval(cfg, show=False)
        assert srv.outcomes["ok"] == 0
    assert third["routing"]["gate"]["threshold"] == gate["threshold"]


def test_with_an_aligned_round_the_gate_routes_the_aligned_drafts_to_cowest(tmp_path, tiny_model_dir):
    from support.tiny import save_aligned_adapter

    with OpenAITestServer(answer_by_length) as srv:
        cfg = _cfg(tmp_path, tiny_model_dir, srv.base_url, "eval.systems=[routed]")
        save_aligned_adapter(cfg, tiny_model_dir)
        summary = run_eval(cfg, show=False)
        calls = srv.outcomes["ok"]
    assert set(summary["systems"]) == {"cowest", "routed"} and "gate" not in summary["notes"]
    assert "cowest added" in summary["notes"]["systems"]
    assert calls == 10 and summary["systems"]["routed"]["strong_calls_paid"] == 0
    assert json.loads((cfg.run_dir / "gate" / "gate.json").read_text())["model"] == "aligned"
    cowest = {r["id"]: r for r in _rows(cfg, "cowest")}
    for r in _rows(cfg, "routed"):
        assert r["weak_draft"] == cowest[r["id"]]["weak_draft"]
        if r["route"] == "strong":
            assert r["strong_output"] == cowest[r["id"]]["strong_output"]
    assert summary["routing"]["partner"] == "cowest"
    assert summary["routing"]["curve"][-1] == pytest.approx(summary["systems"]["cowest"]["metrics"]["accuracy"])


def test_gate_settings_move_only_the_gated_fingerprints(tmp_path):
    from cowest.eval.evaluate import system_fingerprint
    from cowest.rundir import RunDir

    base = [f"output_dir={tmp_path}", "task.name=demo", "task.n_train=40"]
    a, b = load_config(None, base), load_config(None, [*base, "gate.strong_share=0.3", "gate.agreement_k=8"])
    for s in ("weak", "strong", "superICL", "collab", "cowest"):
        assert system_fingerprint(a, RunDir(a), s) == system_fingerprint(b, RunDir(b), s)
    for s in ("routed", "random_gate"):
        assert system_fingerprint(a, RunDir(a), s) != system_fingerprint(b, RunDir(b), s)
