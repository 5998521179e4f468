"""bench/routing.py on a tiny finished run: it adds the gated systems without new paid calls and writes the
issue's figures; a run where the collaboration is no better than the weak draft gets no ratios."""

import json

from support.bench import load_bench

from cowest.config import load_config
from cowest.eval.evaluate import run_eval
from cowest.testing.openai_server import OpenAITestServer


def _routing():
    return load_bench("routing")


def by_length(messages, body):
    return "Answer: " + "ABCD"[len(messages[-1]["content"]) % 4]


def test_bench_routing_on_a_finished_run(tmp_path, tiny_model_dir):
    with OpenAITestServer(by_length) as srv:
        cfg = load_config(None, [
            f"output_dir={tmp_path}", "name=tiny", "task.name=demo", "task.n_train=40", "task.n_eval=8",
            f"weak.model={tiny_model_dir}", "weak.max_new_tokens=8", "weak.dtype=float32",
            f"strong.base_url={srv.base_url}", "strong.api_key_env=null", "gate.calibration_questions=10",
            "gate.agreement_k=2", "eval.systems=[weak,collab]"])
        run_eval(cfg, show=False)
        paid = srv.outcomes["ok"]
        # an override after --out (the run's own setting, so nothing changes): argparse must still take it
        f = _routing().main([str(cfg.run_dir), "--out", str(tmp_path / "out"), "gate.agreement_k=2"])
        assert srv.outcomes["ok"] == paid  # the gated systems are answered from the cache
    data = json.loads((tmp_path / "out" / "routing.json").read_text())
    md = (tmp_path / "out" / "routing.md").read_text()
    assert data["partner"] == "collab" and set(data["aurocs"]) == {"answer_prob", "agreement", "seq_logprob"}
    assert set(data["systems"]) == {"collab", "routed", "random_gate"}
    assert data["systems"]["routed"]["strong_calls_paid"] == 0
    assert "routed - collab" in data["comparisons"] and "AUROC" in md and "Goals (issue 14)" in md
    assert f["gap"] == data["gap"]
    assert "Calibration checks: drafts right" in md and data["calibration_checks"]
    # the run's own eval still has its systems, now with the gated ones
    metrics = json.loads((cfg.run_dir / "eval" / "metrics.json").read_text())
    assert {"weak", "collab", "routed", "random_gate"} <= set(metrics["systems"])


def test_no_gap_is_said_plainly():
    r = _routing()
    summary = {"task": "demo", "split": "dev", "primary_metric": "accuracy", "systems": {
        "cowest": {"metrics": {"accuracy": 40.0}, "strong_calls_needed": 10, "strong_calls_paid": 10},
        "routed": {"metrics": {"accuracy": 50.0}, "strong_calls_needed": 4, "strong_calls_paid": 0}},
        "routing": {"partner": "cowest", "n": 10, "weak_alone": 50.0, "collaboration": 40.0, "gap": -10.0,
                    "apgr": None, "cpt50": None, "cpt80": None, "comparisons": {},
                    "gate": {"aurocs": {}, "score": "agreement", "threshold": 0.5, "strong_share": 0.4, "n": 20,
                             "model": "aligned"}}}
    f = r.figures(summary)
    assert f["apgr"] is None and "APGR >= 0.6" not in f["goals"]
    assert f["goals"]["routed makes >= 30% fewer strong calls"] and f["strong_calls_saved"] == 0.6
    assert "not better than the weak draft alone" in r.markdown(f, "cmd")
