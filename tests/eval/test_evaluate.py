"""End to end: `run_eval` with the tiny random weak model and a real local OpenAI-protocol server."""

import json

import pytest

from cowest.config import load_config
from cowest.errors import ConfigError
from cowest.eval.evaluate import run_eval
from cowest.testing.openai_server import OpenAITestServer


def _cfg(tmp_path, tiny_model_dir, base_url, *extra):
    return load_config(
        None,
        [
            f"output_dir={tmp_path}",
            "name=e2e",
            "task.name=demo",
            "task.n_eval=6",
            f"weak.model={tiny_model_dir}",
            "weak.max_new_tokens=8",
            f"strong.base_url={base_url}",
            "strong.api_key_env=null",
            "strong.max_concurrency=3",
            "eval.systems=[weak,strong,superICL,collab,cowest]",
            *extra,
        ],
    )


def always_b(messages, body):
    return "Reasoning here.\nAnswer: B"


def test_eval_all_systems_then_resume_without_new_calls(tmp_path, tiny_model_dir):
    with OpenAITestServer(always_b) as srv:
        cfg = _cfg(tmp_path, tiny_model_dir, srv.base_url)
        summary = run_eval(cfg, show=False)
        first_calls = srv.outcomes["ok"]
        # strong, superICL, collab: one call per question; cowest has no aligned model yet -> skipped
        assert first_calls == 3 * 6
        assert set(summary["systems"]) == {"weak", "strong", "superICL", "collab"}
        assert "cowest" in summary["notes"]
        gold_b = 100.0 * sum(1 for r in _rows(cfg, "strong") if r["gold"] == ["B"]) / 6
        for s in ("strong", "superICL", "collab"):
            assert summary["systems"][s]["metrics"]["accuracy"] == pytest.approx(gold_b)
            assert summary["systems"][s]["strong_calls_needed"] == 6
            assert summary["systems"][s]["strong_calls_paid"] == 6
            assert summary["systems"][s]["strong_tokens"] > 0
        assert summary["systems"]["weak"]["strong_calls_needed"] == 0
        collab = _rows(cfg, "collab")
        assert all("<draft>" in r["prompt"][-1]["content"] and r["weak_draft"] is not None for r in collab)
        supericl = _rows(cfg, "superICL")
        assert all("Fine-tuned small model's prediction" in r["prompt"][-1]["content"] for r in supericl)
        for name in ("metrics.json", "report.md", "systems.png"):
            assert (cfg.run_dir / "eval" / name).exists()
        # flips: every strong answer is B, with or without a draft, so nothing flips against the strong model;
        # against the draft, the strong model corrects exactly the B questions whose draft did not say B
        flips = json.loads((cfg.run_dir / "eval" / "metrics.json").read_text())["flips"]["systems"]
        assert set(flips) == {"superICL", "collab"}
        weak = {r["id"]: r["prediction"] for r in _rows(cfg, "weak")}
        gold = {r["id"]: r["gold"] for r in _rows(cfg, "strong")}
        for s in flips:
            assert (flips[s]["vs_strong"]["helped"], flips[s]["vs_strong"]["misled"]) == (0, 0)
            assert flips[s]["vs_weak"]["corrected"] == sum(gold[i] == ["B"] and weak[i] != "B" for i in weak)
            assert flips[s]["vs_weak"]["corrupted"] == sum(gold[i] != ["B"] and weak[i] == gold[i][0] for i in weak)
        assert "Correction analytics" in (cfg.run_dir / "eval" / "report.md").read_text()
        # the scripted strong model answers B to everything: the label table names the collapse
        labels = json.loads((cfg.run_dir / "eval" / "metrics.json").read_text())["labels"]
        assert labels["systems"]["collab"] == {"B": 6} and "collab's answers: B on 6 of 6" in labels["collapsed"]
        assert "## Answers per label" in (cfg.run_dir / "eval" / "report.md").read_text()

        # a second run reads finished rows and the cache: no new requests, no duplicate lines
        summary2 = run_eval(cfg, show=False)
        assert srv.outcomes["ok"] == first_calls
        assert len(_rows(cfg, "collab")) == 6
        assert summary2["systems"]["strong"]["metrics"] == summary["systems"]["strong"]["metrics"]
        # the resumed run still needs 6 calls per system and pays none new (above); it reports the 6 its
        # predictions cost in the first invocation, not 0
        assert summary2["systems"]["collab"]["strong_calls_needed"] == 6
        assert summary2["systems"]["collab"]["strong_calls_paid"] == 6
        assert summary2["systems"]["collab"]["strong_tokens"] == summary["systems"]["collab"]["strong_tokens"]

        # a changed model invalidates the weak-dependent predictions unless --overwrite
        with pytest.raises(ConfigError, match="pass --overwrite"):
            run_eval(_cfg(tmp_path, tiny_model_dir, srv.base_url, "weak.max_new_tokens=9"), show=False)


def _rows(cfg, system):
    path = cfg.run_dir / "eval" / "predictions" / f"{system}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_superICL_on_a_free_form_task_reports_confidence(tmp_path, tiny_model_dir):
    """IfQA has no label set: SuperICL's confidence is the weak model's answer probability."""
    from pathlib import Path

    data = Path(__file__).resolve().parents[1] / "fixtures" / "tasks" / "ifqa"
    with OpenAITestServer(lambda m, b: "Answer: 1912") as srv:
        cfg = _cfg(tmp_path, tiny_model_dir, srv.base_url, "task.name=ifqa", f"task.data={data}",
                   "task.n_eval=3", "eval.systems=[weak,superICL]")
        summary = run_eval(cfg, show=False)
    assert summary["systems"]["superICL"]["n"] == 3
    rows = _rows(cfg, "superICL")
    for r in rows:
        if r["weak_prediction"] is not None:
            assert 0.0 < r["confidence"] <= 1.0
        assert r["prediction"] == "1912"


def test_fingerprint_follows_the_local_strong_model_and_its_engine(tmp_path):
    """Switching the managed local strong model (or the engine serving it) must not keep old predictions."""
    from cowest.eval.evaluate import system_fingerprint
    from cowest.rundir import RunDir

    def fp(*extra):
        cfg = load_config(None, [f"output_dir={tmp_path}", *extra])
        return {s: system_fingerprint(cfg, RunDir(cfg), s) for s in ("strong", "collab", "cowest")}

    a = fp("strong.local.gguf=/models/a.gguf")
    b = fp("strong.local.gguf=/models/b.gguf")
    c = fp("strong.local.gguf=/models/a.gguf", "strong.local.engine=llama.cpp")
    for s in a:
        assert a[s] != b[s] and a[s] != c[s]
    assert fp("strong.local.gguf=/models/a.gguf") == a


def test_journaled_drafts_follow_the_weak_model_not_the_strong_one(tmp_path):
    """Eval's draft journal is kept across a change of strong model and dropped when the weak model changes."""
    from cowest.eval.evaluate import draft_fingerprint
    from cowest.rundir import RunDir

    def fp(kind, *extra):
        cfg = load_config(None, [f"output_dir={tmp_path}", *extra])
        return draft_fingerprint(cfg, RunDir(cfg), kind)

    assert fp("sft", "strong.local.gguf=/models/a.gguf") == fp("sft", "strong.local.gguf=/models/b.gguf")
    assert fp("sft") != fp("sft", "weak.max_new_tokens=7") and fp("sft") != fp("aligned")
    assert fp("aligned") != fp("aligned", "weak.temperature=0.5")


def test_the_report_shows_the_validation_gain_of_the_model_it_evaluates(tmp_path):
    import json

    from cowest.config import load_config
    from cowest.eval.evaluate import validation_gain, validation_note
    from cowest.rundir import RunDir, mark_done

    cfg = load_config(None, [f"output_dir={tmp_path}", "name=v"])
    rd = RunDir(cfg).create()
    assert validation_gain(cfg, rd) is None  # nothing aligned
    rd.align_adapter(1).mkdir(parents=True)
    (rd.align_adapter(1) / "adapter_config.json").write_text("{}")
    mark_done(rd.align(1), "align-a")
    v = {"round": 1, "n": 64, "evaluator": "metric", "gain": [3.1, -1.2, 7.5], "detectable": 6.04,
         "metric": "accuracy", "metric_gain": [3.1, -1.2, 7.5]}
    rd.validation(1).mkdir(parents=True)
    (rd.validation(1) / "validation.json").write_text(json.dumps(v))
    mark_done(rd.validation(1), "val", align="align-a")
    assert validation_gain(cfg, rd) == v
    assert validation_note(v) == ("aligned − SFT drafts on 64 held-out training questions (round 1): E (metric) "
                                  "+3.1 [-1.2, +7.5] (detectable ±6.0), accuracy +3.1 [-1.2, +7.5] points")
    mark_done(rd.align(1), "align-b")  # re-aligned since: that gain is not this model's
    assert validation_gain(cfg, rd) is None
