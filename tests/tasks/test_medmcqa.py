import json
import sys
import types

import pytest

from cowest.errors import DataError
from cowest.tasks.medmcqa import MedMCQA, mcq_question


def test_load_fixture(fixtures):
    ex = MedMCQA(fixtures / "medmcqa").load("dev")
    assert [e.id for e in ex] == ["m1", "m2", "m3", "m4"]
    assert ex[0].question == (
        "Axonal transport is:\nA. Antegrade\nB. Retrograde\nC. Antegrade and retrograde\nD. None"
    )
    assert ex[0].gold == ["C"] and ex[1].gold == ["B"] and ex[2].gold == ["A"]
    assert ex[0].rationale == "Kinesin moves cargo forward, dynein backward."
    assert ex[1].rationale is None and ex[2].rationale is None  # null and empty exp
    assert ex[1].choices == {"A": "Vitamin A", "B": "Vitamin C", "C": "Thiamin", "D": "Riboflavin"}
    assert ex[3].meta == {"choice_type": "single", "subject_name": "Surgery", "topic_name": "GIT"}


def test_mcq_question():
    assert mcq_question(" Q? ", {"A": "x", "B": "y"}) == "Q?\nA. x\nB. y"


def _write(tmp_path, rows):
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


GOOD = {"id": "g", "question": "q", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 0, "exp": None}


@pytest.mark.parametrize(
    "bad, msg",
    [
        ({"cop": 4}, "dev.jsonl:2: cop must be a 0-based option index 0-3, got 4"),
        ({"cop": "1"}, "dev.jsonl:2: field 'cop' must be int"),
        ({"cop": True}, "dev.jsonl:2: field 'cop' must be int, got bool"),
        ({"cop": None}, "dev.jsonl:2: missing cop .* other rows have one"),
        ({"opc": None}, "dev.jsonl:2: missing field 'opc'"),
        ({"question": ["q"]}, "dev.jsonl:2: field 'question' must be str"),
        ({"exp": 3}, "dev.jsonl:2: field 'exp' must be str"),
    ],
)
def test_bad_rows(tmp_path, bad, msg):
    _write(tmp_path, [GOOD, {**GOOD, **bad}])
    with pytest.raises(DataError, match=msg):
        MedMCQA(tmp_path).load("dev")


def test_unlabelled_split_has_empty_gold(tmp_path):
    _write(tmp_path, [{**GOOD, "cop": -1}, {**GOOD, "cop": None, "id": "h"}])
    ex = MedMCQA(tmp_path).load("dev")
    assert [e.gold for e in ex] == [[], []]
    with pytest.raises(DataError, match="no gold answer"):
        MedMCQA(tmp_path).score(["A", "B"], ex)


def test_hub(monkeypatch):
    seen = []

    def fake(name, split):
        seen.append((name, split))
        return [dict(GOOD, cop=3)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake))
    ex = MedMCQA(None).load("dev")
    assert seen == [("openlifescienceai/medmcqa", "validation")] and ex[0].gold == ["D"]


@pytest.mark.parametrize(
    "output, parsed",
    [
        ("Answer: (B)", "B"),
        ("Scurvy is caused by lack of ascorbic acid. The answer is B.", "B"),
        ("**B**", "B"),
        ("B) Vitamin C", "B"),
        ("Answer: Vitamin C", "B"),  # option text, and the 'C' inside it is not a letter
        ("Vitamin C deficiency impairs collagen synthesis, leading to scurvy.", "B"),
        ("Answer: B\nExplanation: vitamin A deficiency causes night blindness instead.", "B"),
        ("Thiamin deficiency causes beriberi, riboflavin deficiency cheilosis.\nSo the answer is option B.", "B"),
        ("The correct answer is: b.", "B"),
        ("A is wrong, C is wrong, D is wrong.\nFinal answer: B", "B"),
        ("Answer: ascorbic acid (B)", "B"),
        ("I would pick riboflavin.", "D"),
        ("I don't know.", None),
    ],
)
def test_parse_answer_with_example(fixtures, output, parsed):
    task = MedMCQA(fixtures / "medmcqa")
    example = task.load("dev")[1]
    assert task.parse_answer(output, example) == parsed


def test_parse_answer_without_example_reads_letters_only():
    assert MedMCQA().parse_answer("Answer: (C)") == "C"
    assert MedMCQA().parse_answer("Answer: Vitamin C") == "C"  # no options known: the letter is all there is


def test_score(fixtures):
    task = MedMCQA(fixtures / "medmcqa")
    ex = task.load("dev")  # golds C, B, A, B
    preds = ["C", "B", None, "C"]
    # accuracy 2/4. F1: A 0 (fn1); B tp1 fn1 -> 2/3; C tp1 fp1 -> 2/3; D never -> 0.
    # macro = (0 + 2/3 + 2/3 + 0)/4 = 1/3
    got = task.score(preds, ex)
    assert got == {"accuracy": 50.0, "macro_f1": pytest.approx(100 / 3)}
    assert task.answer_format() == "a single letter, A, B, C or D"
    assert task.gold_answer(ex[0]) == "C"


def test_real_data(shared_data):
    task = MedMCQA(shared_data / "medmcqa")
    dev = task.load("dev")
    assert len(dev) == 2059 and all(len(e.gold) == 1 for e in dev)
    assert sum(e.rationale is not None for e in dev) > 900
    # every gold option's text parses back to its letter
    assert all(task.parse_answer(f"Answer: {e.choices[e.gold[0]]}", e) == e.gold[0] for e in dev)
