"""The alignment gain on validation, end to end: real tiny weak models draft, the package's OpenAI test server
plays a scripted strong model, and the gain is checked against the paired difference computed by hand.

The "SFT model" is the tiny random model saved whole as the run's SFT output; the "aligned model" is a copy
with perturbed weights (so its drafts differ) or the SFT model itself (so every draft is identical). No
training runs here: what is tested is what validation does with two models, not how they were made.
"""

import json
import shutil

import pytest

from cowest.config import load_config
from cowest.errors import ConfigError, DataError, NotReadyError, StrongAPIError
from cowest.io import read_jsonl
from cowest.testing.openai_server import OpenAITestServer
from support.scripted import GOLD, demo_gold
from support.scripted import draft_helps as helps
from support.scripted import hash_responder as responder

N_TRAIN, N_VAL = 8, 6
EVAL_QUESTIONS = set(demo_gold("dev"))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(sft model dir, a perturbed copy): two real tiny models that draft differently."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from support.tiny import make_tiny_model

    sft = make_tiny_model(tmp_path_factory.mktemp("val_sft"), tokenizer="builtin")
    other = tmp_path_factory.mktemp("val_aligned")
    model = AutoModelForCausalLM.from_pretrained(sft)
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    model.save_pretrained(other)
    AutoTokenizer.from_pretrained(sft).save_pretrained(other)
    return sft, other


def _cfg(tmp_path, base_url, *extra, weak="unused-base"):
    return load_config(None, [f"weak.model={weak}",
        "task.name=demo", f"task.n_train={N_TRAIN}", f"output_dir={tmp_path}", "name=val",
        f"align.validation_questions={N_VAL}", "weak.max_new_tokens=8", "weak.batch_size=4",
        f"strong.base_url={base_url}", "strong.api_key_env=null", "strong.max_concurrency=1", "strong.max_retries=0",
        *extra,
    ])


def _setup(cfg, models, *, identical=False):
    """The run's SFT model (a whole model in sft/adapter) and a finished align round 1 whose chain is the
    perturbed model (or, ``identical``, the SFT model itself)."""
    from cowest.rundir import RunDir, mark_done

    from cowest.training import FULL_MODEL_MARKER

    rd = RunDir(cfg).create()
    sft, other = models
    shutil.copytree(sft, rd.sft_adapter)
    (rd.sft_adapter / FULL_MODEL_MARKER).write_text("{}")  # what sft.lora=false leaves
    mark_done(rd.sft, "sft-test")
    stage = rd.align(1)
    stage.mkdir(parents=True)
    base = "sft/adapter"
    if not identical:
        shutil.copytree(other, stage / "model")
        base = "align/round1/model"
    (stage / "adapter_info.json").write_text(json.dumps({"base": base, "merge": []}))
    mark_done(stage, "align-test")
    return cfg


def test_gain_is_the_paired_difference_and_the_eval_split_is_never_used(tmp_path, models):
    from cowest.feedback.validate import run_validation
    from cowest.stats import paired_bootstrap
    from cowest.tasks.splits import train_examples

    with OpenAITestServer(responder) as srv:
        cfg = _setup(_cfg(tmp_path, srv.base_url), models)
        s = run_validation(cfg, 1, show=False, chunk_size=4)
        bodies = list(srv.bodies)
    stage = cfg.run_dir / "validation" / "round1"
    rows = read_jsonl(stage / "records.jsonl")
    assert len(rows) == s["n"] == N_VAL and (stage / ".done.json").exists()
    assert json.loads((stage / "validation.json").read_text()) == s
    a, b = [], []
    for r in rows:
        for side, out in (("aligned", a), ("sft", b)):
            want = 1.0 if helps(r[side]["draft"]) else 0.0
            assert r[side]["score"] == want and r[side]["metric"] == want
            out.append(want)
    assert a != b, "the scripted strong model should tell the two sides apart on some question"
    assert s["gain"] == [round(x, 2) for x in paired_bootstrap(a, b)]
    assert s["gain"][0] == pytest.approx(100 * (sum(a) - sum(b)) / N_VAL, abs=0.01)
    assert s["metric_gain"] == s["gain"] and s["detectable"] is not None
    assert s["means"]["aligned"]["score"] == pytest.approx(100 * sum(a) / N_VAL, abs=0.01)
    assert not all(r["identical"] for r in rows), "the perturbed model should draft differently"
    # one request per distinct draft, all paid
    needed = sum(1 if r["identical"] else 2 for r in rows)
    assert len(bodies) == s["strong_calls_needed"] == s["strong_calls_paid"] == needed
    # held-out training questions only: outside the training subsample, never the eval split
    _, train = train_examples(cfg)
    assert not {r["id"] for r in rows} & {ex.id for ex in train}
    asked = {next(q for q in GOLD if q in b["messages"][-1]["content"]) for b in bodies}
    assert asked == {r["question"].strip() for r in rows} and not asked & EVAL_QUESTIONS
    # finished: a second call reads the result and asks nothing
    with OpenAITestServer(responder) as srv:
        assert run_validation(_cfg(tmp_path, srv.base_url), 1, show=False) == s
        assert srv.requests_total == 0


def test_identical_drafts_cost_one_call(tmp_path, models):
    from cowest.feedback.validate import run_validation

    with OpenAITestServer(responder) as srv:
        cfg = _setup(_cfg(tmp_path, srv.base_url), models, identical=True)
        s = run_validation(cfg, 1, show=False)
        assert srv.requests_total == N_VAL
    assert s["identical_share"] == 1.0 and s["gain"][0] == 0.0 and s["strong_calls_needed"] == N_VAL


def test_a_killed_validation_pays_for_nothing_twice(tmp_path, models):
    from cowest.feedback.validate import run_validation

    fail_after = 5
    with OpenAITestServer(responder, faults=lambda n, body: "ok" if n < fail_after else "400") as srv:
        cfg = _setup(_cfg(tmp_path, srv.base_url), models)
        with pytest.raises(StrongAPIError):
            run_validation(cfg, 1, show=False, chunk_size=2)
        answered = [json.dumps(b["messages"]) for b in srv.bodies[:fail_after]]
    stage = cfg.run_dir / "validation" / "round1"
    done = read_jsonl(stage / "records.jsonl")
    drafts = read_jsonl(stage / "drafts.jsonl")
    assert 0 < len(done) < N_VAL and len(drafts) == N_VAL and not (stage / ".done.json").exists()

    def no_model(side):
        raise AssertionError("a resumed validation must reuse its journaled drafts")

    with OpenAITestServer(responder) as srv:
        s = run_validation(_cfg(tmp_path, srv.base_url), 1, show=False, load_weak=no_model)
        again = [json.dumps(b["messages"]) for b in srv.bodies]
    assert not set(answered) & set(again), "a request answered before the failure was sent again"
    assert len(answered) + len(again) == s["strong_calls_needed"]
    assert s["n"] == N_VAL and [r["id"] for r in read_jsonl(stage / "records.jsonl")][:len(done)] == [r["id"] for r in done]
    # a changed config refuses to mix with these rows
    with pytest.raises(ConfigError, match="different config"):
        run_validation(_cfg(tmp_path, "http://127.0.0.1:9/v1", "feedback.evaluator=likelihood",
                            "align.validation_questions=7"), 1, show=False)


def test_refusals_are_clear(tmp_path, models):
    from cowest.feedback.validate import run_validation

    cfg = _setup(_cfg(tmp_path, "http://127.0.0.1:9/v1", "task.n_train=240"), models)
    with pytest.raises(DataError, match="outside the 240 used for training"):
        run_validation(cfg, 1, show=False)
    with pytest.raises(ConfigError, match="validation_questions=64"):
        run_validation(_cfg(tmp_path, "http://127.0.0.1:9/v1", "align.validation_questions=0"), 1, show=False)
    with pytest.raises(NotReadyError, match="cowest align --round 1"):
        run_validation(_cfg(tmp_path / "other", "http://127.0.0.1:9/v1"), 1, show=False)


def test_the_setting_is_validated_and_leaves_other_stages_fingerprints_alone():
    from cowest.rundir import fingerprint

    with pytest.raises(ConfigError, match="align.validation_questions must be >= 0"):
        load_config(None, ["align.validation_questions=-1"])
    off, on = load_config(None, []), load_config(None, ["align.validation_questions=64"])
    assert fingerprint(off.align) == fingerprint(on.align)  # turning it on redoes no DPO


def test_the_summary_counts_drafts_that_repeat_their_answer_line():
    from cowest.feedback.validate import summarise

    def side(draft, score):
        return {"draft": draft, "score": score, "metric": score}

    rows = [{"identical": False, "sft": side("Why.\nAnswer: A", 1.0), "aligned": side("Why.\nAnswer: A\nAnswer: A", 0.0)},
            {"identical": True, "sft": side("Why.\nAnswer: B", 1.0), "aligned": side("Why.\nAnswer: B", 1.0)}]
    s = summarise(rows, round_=1, asked=2, evaluator="metric", metric="em", paid={})
    assert s["repeated_answer_share"] == {"sft": 0.0, "aligned": 0.5}
    assert summarise([], round_=1, asked=0, evaluator="metric", metric="em", paid={})["repeated_answer_share"] is None


@pytest.mark.parametrize("in_flight, questions_per_call", [(1, [2, 2, 2]), (4, [4, 2])])
def test_a_batch_of_strong_calls_covers_the_client_s_slots(tmp_path, models, monkeypatch, in_flight,
                                                           questions_per_call):
    from cowest.feedback import validate

    sizes, score = [], validate.score_chunk
    monkeypatch.setattr(validate, "score_chunk", lambda cfg, task, exs, *a: sizes.append(len(exs)) or
                        score(cfg, task, exs, *a))
    with OpenAITestServer(responder) as srv:
        cfg = _setup(_cfg(tmp_path, srv.base_url, f"strong.max_concurrency={in_flight}"), models)
        s = validate.run_validation(cfg, 1, show=False, chunk_size=2)
    assert sizes == questions_per_call and s["n"] == N_VAL
