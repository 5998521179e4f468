import dataclasses

import pytest

from cowest.config import load_config
from cowest.sft.train import build_sft_examples, needs_rationales, prepare_sft_rows, rationale_sources
from cowest.tasks import get_task


@pytest.fixture(scope="module")
def task():
    return get_task(load_config(None, ["task.name=demo"]).task)


@pytest.fixture(scope="module")
def examples(task):
    exs = task.load("train")[:4]
    # the last two have no dataset rationale (like IfQA / MedMCQA rows without `exp`)
    return exs[:2] + [dataclasses.replace(e, rationale=None) for e in exs[2:]]


def completion(row):
    assert len(row["completion"]) == 1 and row["completion"][0]["role"] == "assistant"
    return row["completion"][0]["content"]


def test_rows_are_conversational_prompt_completion(task, examples):
    rows = build_sft_examples(task, examples, "cot", {})
    assert len(rows) == 4
    for ex, row in zip(examples, rows):
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert ex.question.strip() in row["prompt"][-1]["content"]
        assert set(row) == {"prompt", "completion"}


@pytest.mark.parametrize("fmt", ["cot", "knowledge", "direct"])
def test_target_per_format(task, examples, fmt):
    ex = examples[0]
    row = build_sft_examples(task, [ex], fmt, {ex.id: "Because the Brask is Logistics'."})[0]
    text = completion(row)
    if fmt == "cot":
        assert text == f"Because the Brask is Logistics'.\nAnswer: {ex.gold[0]}"
    elif fmt == "knowledge":
        assert text == "Because the Brask is Logistics'." and "Answer:" not in text
    else:
        assert text == f"Answer: {ex.gold[0]}"


def test_cot_targets_sources(examples):
    ids = [e.id for e in examples]
    have, ask = rationale_sources(examples, "dataset")
    assert sorted(have) == sorted(ids[:2]) and ask == []
    have, ask = rationale_sources(examples, "auto")
    assert sorted(have) == sorted(ids[:2]) and [e.id for e in ask] == ids[2:]
    have, ask = rationale_sources(examples, "strong")
    assert have == {} and [e.id for e in ask] == ids
    assert rationale_sources(examples, "direct") == ({}, [])


def test_missing_rationale_falls_back_to_direct(task, examples):
    have, _ = rationale_sources(examples, "dataset")
    rows = build_sft_examples(task, examples, "cot", have)
    assert completion(rows[0]).startswith(examples[0].rationale.strip())
    assert completion(rows[3]) == f"Answer: {examples[3].gold[0]}"


def test_needs_rationales():
    assert needs_rationales(load_config(None, ["task.format=cot"]))
    assert needs_rationales(load_config(None, ["task.format=knowledge", "sft.cot_targets=strong"]))
    assert not needs_rationales(load_config(None, ["task.format=direct", "sft.cot_targets=strong"]))
    assert not needs_rationales(load_config(None, ["task.format=cot", "sft.cot_targets=direct"]))


def test_strong_rationales_are_asked_cached_and_counted(tmp_path):
    """cot_targets=strong: every target's rationale comes from the strong endpoint, once."""
    from cowest.testing.openai_server import OpenAITestServer

    def responder(messages, body):
        assert "The correct answer is:" in messages[-1]["content"]
        return "The product's owner handles it.\nAnswer: X"  # a stray Answer line is dropped

    with OpenAITestServer(responder) as srv:
        cfg = load_config(None, [
            "task.name=demo", "task.n_train=5", "sft.cot_targets=strong", f"output_dir={tmp_path}",
            f"strong.base_url={srv.base_url}", "strong.api_key_env=null",
        ])
        rows, info = prepare_sft_rows(cfg)
        assert srv.requests_total == 5
        rows2, _ = prepare_sft_rows(cfg)  # cached: nothing asked again
        assert srv.requests_total == 5
    assert rows == rows2
    assert info["with_rationale"] == 5 and info["strong_rationales_requested"] == 5
    for row in rows:
        assert completion(row).startswith("The product's owner handles it.\nAnswer: ")
        assert "Answer: X" not in completion(row)
    assert (tmp_path / "demo" / "usage.json").exists()
