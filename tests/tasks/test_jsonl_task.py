import json

import pytest

from cowest.config import TaskConfig
from cowest.errors import ConfigError, DataError
from cowest.tasks import get_task
from cowest.tasks.jsonl_task import JsonlTask


def mcq_cfg(data, **kw):
    return TaskConfig(
        name="jsonl", data=str(data), question_field="prompt", answer_field="label", choices_field="options",
        id_field="qid", rationale_field="why", **kw,
    )


def test_needs_data():
    with pytest.raises(ConfigError, match="task.data"):
        JsonlTask(TaskConfig(name="jsonl"))


def test_mcq_letter_index_and_text_answers(fixtures):
    task = get_task(mcq_cfg(fixtures / "own_mcq"))
    ex = task.load("dev")
    assert [e.id for e in ex] == ["q1", "q2", "q3"]
    assert [e.gold for e in ex] == [["B"], ["C"], ["A"]]  # letter 'B', index 2, text 'mercury'
    assert ex[0].question == "Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus"
    assert ex[0].rationale == "Jupiter is the largest planet." and ex[1].rationale is None
    assert ex[2].choices == {"A": "Mercury", "B": "Iron", "C": "Gold", "D": "Tin"}
    assert task.labels == ("A", "B", "C", "D")  # union over the data
    assert task.metric_names == ("accuracy", "macro_f1")
    assert task.answer_format() == "a single letter, A, B, C or D"
    assert task.parse_answer("Answer: Jupiter", ex[0]) == "B"
    assert task.parse_answer("I think (C)") == "C"
    # golds B, C, A; preds B, A, A -> accuracy 2/3; F1: A tp1 fp1 -> 2/3, B 1, C 0 (fn1), D 0
    got = task.score(["B", "A", "A"], ex)
    assert got["accuracy"] == pytest.approx(200 / 3)
    assert got["macro_f1"] == pytest.approx(100 * (2 / 3 + 1) / 4)


@pytest.mark.parametrize(
    "row, msg",
    [
        ({"qid": "x", "prompt": "p", "options": ["a", "b"], "label": "Z"}, "answer 'Z' is not a letter"),
        ({"qid": "x", "prompt": "p", "options": ["a", "b"], "label": 5}, "answer index 5 is out of range 0-1"),
        ({"qid": "x", "prompt": "p", "options": ["a"], "label": 0}, "must hold 2-26 options"),
        ({"qid": "x", "prompt": "p", "options": {"one": "a", "two": "b"}, "label": 0}, "must map single letters"),
        ({"qid": "x", "prompt": "p", "options": ["a", "b"]}, "missing field 'label'"),
        ({"prompt": "p", "options": ["a", "b"], "label": 0}, "missing field 'qid'"),
    ],
)
def test_mcq_bad_rows(tmp_path, row, msg):
    (tmp_path / "dev.jsonl").write_text("\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=f"dev.jsonl:2: .*{msg}"):
        JsonlTask(mcq_cfg(tmp_path)).load("dev")


def test_label_task_over_all_gold_labels(fixtures):
    cfg = TaskConfig(name="jsonl", data=str(fixtures / "own_label"), question_field="text",
                     answer_field="sentiment", metric="accuracy")
    task = get_task(cfg)
    dev = task.load("dev")
    assert [e.id for e in dev] == ["0", "1", "2"]
    assert task.labels == ("negative", "neutral", "positive")  # 'neutral' only appears in dev
    assert task.parse_answer("This review is glowing.\nAnswer: Positive") == "positive"
    assert task.answer_format() == "one label: negative, neutral or positive"
    # golds pos, neu, neg; preds pos, None, pos -> acc 1/3; F1 neg 0, neu 0, pos tp1 fp1 -> 2/3
    got = task.score(["positive", None, "positive"], dev)
    assert got["accuracy"] == pytest.approx(100 / 3)
    assert got["macro_f1"] == pytest.approx(100 * (2 / 3) / 3)


def test_freeform_single_file(fixtures):
    cfg = TaskConfig(name="jsonl", data=str(fixtures / "own_qa" / "data.jsonl"), question_field="q", answer_field="a")
    task = get_task(cfg)
    ex = task.load("dev")  # a single file serves any split
    assert ex[0].gold == ["Paris", "Paris, France"] and ex[1].gold == ["Pacific Ocean"]
    assert task.labels is None and task.metric_names == ("em", "f1")
    assert task.parse_answer("Answer: Paris.") == "Paris"
    assert task.item_scores("the Pacific", ex[1]) == {"em": 0.0, "f1": pytest.approx(2 / 3)}
    assert task.score(["paris", "Pacific Ocean"], ex) == {"em": 100.0, "f1": 100.0}


def test_freeform_bad_answer_type(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"q": "x", "a": {"no": 1}}\n')
    task = JsonlTask(TaskConfig(name="jsonl", data=str(tmp_path / "d.jsonl"), question_field="q", answer_field="a"))
    with pytest.raises(DataError, match=r"d.jsonl:1: field 'a' must be"):
        task.load("train")
