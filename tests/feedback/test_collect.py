"""Feedback end to end: the tiny weak model drafts, a local OpenAI-protocol server plays the strong model.

The server's strong model answers a question correctly only when the weak draft it is shown contains
the gold letter; alone it is always wrong. So Δ = 1 exactly for drafts that contain the gold letter
and 0 otherwise, which the test can check draft by draft.
"""

import json
import re

import pytest

from cowest.config import load_config
from cowest.io import read_jsonl
from cowest.models.strong import StrongAPIError
from cowest.tasks import get_task
from cowest.testing.openai_server import OpenAITestServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """The tiny model with its 600-token built-in tokenizer: a 49k-token vocabulary would make the
    logits, and so every training step, ~40x bigger."""
    from cowest.testing.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_small_vocab"), tokenizer="builtin")

N_TRAIN = 8


def _gold_by_question():
    task = get_task(load_config(None, ["task.name=demo"]).task)
    return {ex.question.strip(): ex.gold[0] for ex in task.load("train")}


GOLD = _gold_by_question()


def helps(draft, gold):
    return gold.lower() in draft.lower()


def responder(messages, body):
    user = messages[-1]["content"]
    question = next(q for q in GOLD if q in user)
    gold = GOLD[question]
    wrong = "A" if gold != "A" else "B"
    m = re.search(r"<draft>\n(.*?)\n</draft>", user, re.S)
    if m is None:  # the strong model alone
        return f"Thinking it over.\nAnswer: {wrong}"
    return f"Using the draft.\nAnswer: {gold if helps(m.group(1), gold) else wrong}"


def _cfg(tmp_path, tiny_model_dir, base_url, name="fb", *extra):
    return load_config(None, [
        "task.name=demo", f"task.n_train={N_TRAIN}", f"weak.model={tiny_model_dir}", f"output_dir={tmp_path}",
        f"name={name}", "weak.max_new_tokens=12", "weak.batch_size=4", "feedback.k=4", "feedback.temperature=1.0",
        f"strong.base_url={base_url}", "strong.api_key_env=null", "strong.max_concurrency=1", "strong.max_retries=0",
        "sft.max_steps=1", "sft.batch_size=2", "sft.max_length=512", "sft.lora_r=4", *extra,
    ])


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_model_dir):
    """One SFT run (1 step) whose adapter the feedback tests draft with."""
    from cowest.sft.train import run_sft

    root = tmp_path_factory.mktemp("fb_runs")
    cfg = _cfg(root, tiny_model_dir, "http://127.0.0.1:9/v1", name="base")
    run_sft(cfg)
    return cfg.run_dir


def _with_sft(tmp_path, sft_run, cfg):
    import shutil

    shutil.copytree(sft_run / "sft", cfg.run_dir / "sft")
    return cfg


def test_feedback_end_to_end(tmp_path, tiny_model_dir, sft_run):
    from cowest.feedback.collect import run_feedback
    from cowest.feedback.pairs import make_pairs

    with OpenAITestServer(responder) as srv:
        cfg = _with_sft(tmp_path, sft_run, _cfg(tmp_path, tiny_model_dir, srv.base_url))
        stats = run_feedback(cfg, 1, chunk_size=3)
        n_requests = srv.requests_total
    stage = cfg.run_dir / "feedback" / "round1"
    records = read_jsonl(stage / "records.jsonl")
    assert len(records) == N_TRAIN and len({r["id"] for r in records}) == N_TRAIN
    n_collab = 0
    for r in records:
        assert len(r["drafts"]) == 4 and len(r["collab_outputs"]) == 4 and len(r["deltas"]) == 4
        assert r["z_scores"] == [0.0] and r["z_mean"] == 0.0  # strong alone: always wrong
        for d, delta, label in zip(r["drafts"], r["deltas"], r["labels"]):
            want = 1.0 if helps(d, r["gold"][0]) else 0.0
            assert delta == want
            assert label == ("chosen" if want > 0 else "rejected")
        n_collab += len(set(r["drafts"]))
    # every paid request: one z per question plus one per distinct draft
    assert n_requests == N_TRAIN + n_collab
    assert stats["strong_calls"] == n_requests
    assert stats["strong_calls_by_tag"] == {"feedback_z": N_TRAIN, "feedback_collab": n_collab}
    assert stats["chosen"] + stats["rejected"] == 4 * N_TRAIN
    assert stats["chosen"] == sum(1 for r in records for d in r["deltas"] if d > 0)
    # pairs follow the records
    pairs = read_jsonl(stage / "pairs.jsonl")
    assert pairs == json.loads(json.dumps(make_pairs(records, "all", 0.0, 4, None, cfg.seed)))
    assert stats["pairs"] == len(pairs)
    mixed = [r for r in records if 0 < sum(1 for d in r["deltas"] if d > 0) < 4]
    assert stats["questions_with_pairs"] == len(mixed) > 0
    for p in pairs:
        assert helps(p["chosen"][0]["content"], GOLD[_q(p)]) and not helps(p["rejected"][0]["content"], GOLD[_q(p)])
    assert sum(stats["no_pair"].values()) + stats["questions_with_pairs"] == N_TRAIN
    assert sum(stats["delta_histogram"]["counts"]) == 4 * N_TRAIN
    on_disk = json.loads((stage / "feedback_stats.json").read_text())
    assert on_disk["pairs"] == stats["pairs"] and (stage / ".done.json").exists()
    # finished: a second call makes no request at all
    with OpenAITestServer(responder) as srv2:
        cfg2 = _cfg(tmp_path, tiny_model_dir, srv2.base_url)
        assert run_feedback(cfg2, 1)["pairs"] == stats["pairs"]
        assert srv2.requests_total == 0


def _q(pair):
    user = pair["prompt"][-1]["content"]
    return next(q for q in GOLD if q in user)


def test_resume_after_a_failure_pays_for_nothing_twice(tmp_path, tiny_model_dir, sft_run):
    from cowest.feedback.collect import run_feedback

    fail_after = 20  # past the first chunk (at most 3 + 3*4 requests), before the end
    with OpenAITestServer(responder, faults=lambda n, body: "ok" if n < fail_after else "400") as srv:
        cfg = _with_sft(tmp_path, sft_run, _cfg(tmp_path, tiny_model_dir, srv.base_url))
        with pytest.raises(StrongAPIError):
            run_feedback(cfg, 1, chunk_size=3)
        answered = [_key(b) for b in srv.bodies[:fail_after]]
    stage = cfg.run_dir / "feedback" / "round1"
    done = read_jsonl(stage / "records.jsonl")
    assert 0 < len(done) < N_TRAIN and len(done) % 3 == 0  # whole chunks only
    assert not (stage / ".done.json").exists()
    with OpenAITestServer(responder) as srv:
        cfg = _cfg(tmp_path, tiny_model_dir, srv.base_url)
        stats = run_feedback(cfg, 1, chunk_size=3)
        again = [_key(b) for b in srv.bodies]
    assert not set(answered) & set(again), "a request answered before the failure was sent again"
    records = read_jsonl(stage / "records.jsonl")
    # the half-done chunk was redrafted identically: its answered requests are used, not replaced
    needed = N_TRAIN + sum(len(set(r["drafts"])) for r in records)
    assert len(again) == needed - fail_after
    assert stats["questions"] == N_TRAIN and stats["questions_resumed"] == len(done)
    assert [r["id"] for r in records[: len(done)]] == [r["id"] for r in done]
    assert len({r["id"] for r in records}) == N_TRAIN


def _key(body):
    return json.dumps([body["messages"], body.get("temperature")], sort_keys=True)


def test_changed_config_refuses_to_resume(tmp_path, tiny_model_dir, sft_run):
    from cowest.errors import ConfigError
    from cowest.feedback.collect import run_feedback

    with OpenAITestServer(responder, faults=lambda n, body: "ok" if n < 3 else "400") as srv:
        cfg = _with_sft(tmp_path, sft_run, _cfg(tmp_path, tiny_model_dir, srv.base_url))
        with pytest.raises(StrongAPIError):
            run_feedback(cfg, 1, chunk_size=3)
        with pytest.raises(ConfigError, match="different config"):
            run_feedback(_cfg(tmp_path, tiny_model_dir, srv.base_url, "fb", "feedback.k=2"), 1)


def test_missing_sft_model_is_a_clear_error(tmp_path, tiny_model_dir):
    from cowest.errors import CowestError
    from cowest.feedback.collect import run_feedback

    cfg = _cfg(tmp_path, tiny_model_dir, "http://127.0.0.1:9/v1", "nosft")
    with pytest.raises(CowestError, match="cowest sft"):
        run_feedback(cfg, 1)


def judge_responder(messages, body):
    """The responder above, plus an LLM judge: 9/10 for the gold answer, 2/10 otherwise."""
    user = messages[-1]["content"]
    if "Gold answer:" not in user:
        return responder(messages, body)
    gold = re.search(r"Gold answer: (\S+)", user).group(1)
    cand = re.search(r"<response>\n(.*?)\n</response>", user, re.S).group(1)
    return "Checked.\nScore: 9/10" if cand.rstrip().endswith(f"Answer: {gold}") else "Wrong.\nScore: 2/10"


def test_feedback_with_the_llm_judge(tmp_path, tiny_model_dir, sft_run):
    from cowest.feedback.collect import run_feedback

    with OpenAITestServer(judge_responder) as srv:
        cfg = _with_sft(tmp_path, sft_run, _cfg(tmp_path, tiny_model_dir, srv.base_url, "fb", "feedback.evaluator=judge"))
        stats = run_feedback(cfg, 1)
    records = read_jsonl(cfg.run_dir / "feedback" / "round1" / "records.jsonl")
    lo, hi = (2 - 1) / 9, (9 - 1) / 9
    for r in records:
        assert r["z_scores"] == [pytest.approx(lo)]
        for d, delta in zip(r["drafts"], r["deltas"]):
            assert delta == pytest.approx(hi - lo if helps(d, r["gold"][0]) else 0.0)
        assert all(texts[-1].startswith(("Checked.", "Wrong.")) for texts in r["judge"]["collab"])
    # one judge call per distinct output (z outputs and collab outputs repeat a lot here)
    assert 0 < stats["strong_calls_by_tag"]["feedback_judge"] <= len(records) * 5
    assert stats["evaluator"] == "judge" and stats["missing_scores"] == 0
