import json

import pytest

from cowest.errors import DataError
from cowest.tasks.base import Example
from cowest.tasks.ifqa import IfQA


def test_load_fixture(fixtures):
    ex = IfQA(fixtures / "ifqa").load("dev")
    assert [e.id for e in ex] == ["7", "8", "9"]
    assert ex[1].gold == ["50 degrees Celsius", "50 °C"]
    assert ex[2].question.startswith("Context: The Eiffel Tower stands beside the Seine.\nLondon lies")
    assert ex[2].question.endswith("\n\nQuestion: If the Eiffel Tower had been built in London, which river would it stand beside?")
    assert ex[0].meta["question"].startswith("If the Berlin Wall")


def test_load_without_context(fixtures):
    ex = IfQA(fixtures / "ifqa", with_context=False).load("train")
    assert ex[0].question == "If Mars had two more moons, how many moons would it have?"


def test_no_hub_copy():
    with pytest.raises(DataError, match="IfQA is not on the Hugging Face hub: set task.data"):
        IfQA(None).load("dev")


def test_missing_split(fixtures):
    with pytest.raises(DataError, match="splits here: dev, train"):
        IfQA(fixtures / "ifqa").load("test")


@pytest.mark.parametrize(
    "row, msg",
    [
        ({"idx": 1, "question": "q?", "context": ["c"]}, "item 1: missing field 'answers'"),
        ({"idx": 1, "question": "q?", "answers": "Bonn"}, "item 1: field 'answers' must be list"),
        ({"idx": 1, "question": 5, "answers": ["x"]}, "item 1: field 'question' must be str"),
        ({"idx": 1, "question": "q?", "answers": []}, "item 1: field 'answers' is an empty list"),
    ],
)
def test_bad_rows_name_file_and_item(tmp_path, row, msg):
    good = {"idx": 0, "question": "q?", "answers": ["a"], "context": ["c"]}
    (tmp_path / "dev.json").write_text(json.dumps([good, row]))
    with pytest.raises(DataError, match=f"dev.json: {msg}"):
        IfQA(tmp_path).load("dev")


@pytest.mark.parametrize(
    "output, parsed",
    [
        ("Bonn remained the capital.\nAnswer: Bonn", "Bonn"),
        ("Answer: Bonn.", "Bonn"),
        ('The answer is "Bonn"', "Bonn"),
        ("**Answer:** Bonn\n\nExplanation: the wall has nothing to do with it.", "Bonn"),
        ("Bonn", "Bonn"),
        ("Let me think. West Germany chose Bonn in 1949.\nSo the capital: Bonn.\n\nAnswer: Bonn", "Bonn"),
        ("Answer: 50 °C", "50 °C"),
        ("Final answer: the River Thames.", "the River Thames"),
        ("Answer: Thames (London's river)", "Thames (London's river)"),
        ("The tower would be beside the Thames.", "The tower would be beside the Thames"),
        ("Answer:", None),
        ("", None),
    ],
)
def test_parse_answer(output, parsed):
    assert IfQA().parse_answer(output) == parsed


def test_item_scores_and_score(fixtures):
    task = IfQA(fixtures / "ifqa")
    ex = task.load("dev")
    assert task.item_scores("bonn", ex[0]) == {"em": 1.0, "f1": 1.0}
    # "50 degrees" vs best gold "50 degrees Celsius": P = 2/2, R = 2/3 -> F1 = 0.8
    s = task.item_scores("50 degrees", ex[1])
    assert s["em"] == 0.0 and s["f1"] == pytest.approx(0.8)
    assert task.item_scores(None, ex[2]) == {"em": 0.0, "f1": 0.0}
    # EM: (1 + 0 + 1)/3 ; F1: (1 + 0.8 + 1)/3
    got = task.score(["Bonn", "50 degrees", "River Thames"], ex)
    assert got["em"] == pytest.approx(200 / 3)
    assert got["f1"] == pytest.approx(280 / 3)
    assert task.item_reward("50 degrees", ex[1]) == pytest.approx(0.8)
    assert task.gold_answer(ex[2]) == "the Thames"
    assert task.metric_names == ("em", "f1") and task.primary_metric == "em" and task.labels is None


def test_unlabelled_example_cannot_be_scored():
    with pytest.raises(DataError, match="example x: no gold answer"):
        IfQA().item_scores("a", Example(id="x", question="q", gold=[]))


def test_real_data(shared_data):
    task = IfQA(shared_data / "ifqa")
    dev = task.load("dev")
    assert len(dev) == 700 and len({e.id for e in dev}) == 700
    assert all(e.gold and e.question.startswith("Context: ") for e in dev)
    assert task.score([e.gold[0] for e in dev], dev) == {"em": 100.0, "f1": 100.0}
