"""Every prompt cowest sends: the formats, what the strong model sees, and what it must never see."""

import pytest

from cowest.config import TaskConfig
from cowest.inference.prompts import (collab_messages, rationale_messages, strong_alone_messages,
                                      supericl_messages, weak_messages, weak_target)
from cowest.tasks import get_task

IFQA = "tests/fixtures/tasks/ifqa"


@pytest.fixture
def ifqa():
    task = get_task(TaskConfig(name="ifqa", data=IFQA))
    return task, task.load("dev"), task.load("train")


def test_weak_prompt_asks_for_the_format(ifqa):
    task, dev, _ = ifqa
    ex = dev[0]
    assert "Answer:" in weak_messages(task, ex, "cot")[-1]["content"]
    assert "Do not state the answer" in weak_messages(task, ex, "knowledge")[-1]["content"]
    assert weak_target(task, ex, "knowledge", "Facts.") == "Facts."
    assert weak_target(task, ex, "cot", None) == f"Answer: {ex.gold[0]}"  # no rationale: a direct target


def test_the_draft_comes_last_and_the_question_before_it(ifqa):
    task, dev, _ = ifqa
    text = collab_messages(task, dev[0], "my draft", "cot")[-1]["content"]
    assert text.endswith("<draft>\nmy draft\n</draft>") and text.index(dev[0].question.strip()) < text.index("<draft>")
    assert collab_messages(task, dev[1], "other", "cot")[-1]["content"].split("Question:")[0] == text.split("Question:")[0]


def test_strong_prompts_never_carry_the_asked_question_s_gold(ifqa):
    task, dev, train = ifqa
    for ex in dev:
        prompts = [strong_alone_messages(task, ex), collab_messages(task, ex, "a draft", "cot"),
                   supericl_messages(task, ex, "guess", 0.4, [(train[0], "x", 0.9)])]
        for p in prompts:
            text = p[-1]["content"].replace(ex.question, "")
            assert all(g not in text for g in ex.gold)
    # only a demonstration's gold is shown, and the rationale prompt (SFT targets) is the one that states it
    assert f"Answer: {train[0].gold[0]}" in supericl_messages(task, dev[0], None, None, [(train[0], "x", 0.9)])[-1]["content"]
    assert dev[0].gold[0] in rationale_messages(task, dev[0])[-1]["content"]
