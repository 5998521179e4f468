from collections import Counter

import pytest

from cowest.config import TaskConfig
from cowest.errors import ConfigError, DataError
from cowest.tasks import get_task
from cowest.tasks.demo import COMPLAINTS, PRODUCTS, TEAMS, DemoTask, generate_rows


def test_splits_sizes_balance_and_disjoint():
    task = get_task(TaskConfig(name="demo"))
    train, dev = task.load("train"), task.load("dev")
    assert len(train) == 240 and len(dev) == 120
    assert Counter(e.gold[0] for e in train) == {"A": 60, "B": 60, "C": 60, "D": 60}
    assert Counter(e.gold[0] for e in dev) == {"A": 30, "B": 30, "C": 30, "D": 30}
    products = {p for p, _ in PRODUCTS}
    assert {e.meta["product"] for e in train} == products == {e.meta["product"] for e in dev}
    # disjoint tickets: no (product, complaint) pair and no question text is shared
    pairs = [{(e.meta["product"], e.meta["complaint"]) for e in split} for split in (train, dev)]
    assert len(pairs[0]) == 240 and len(pairs[1]) == 120 and not pairs[0] & pairs[1]
    assert not {e.question for e in train} & {e.question for e in dev}
    assert len({e.id for e in train + dev}) == 360


def test_deterministic_and_seeded():
    a, b = DemoTask().load("dev"), DemoTask().load("dev")
    assert a == b
    assert DemoTask(seed=1).load("dev") != a


def test_example_shape():
    ex = DemoTask().load("train")[0]
    product = ex.meta["product"]
    owner = dict(PRODUCTS)[product]
    assert product in ex.question and "Which team must handle this ticket?" in ex.question
    assert ex.question.endswith("\nA. Firmware\nB. Logistics\nC. Billing\nD. Safety")
    assert ex.gold == ["ABCD"[TEAMS.index(owner)]]
    assert ex.rationale == f"Per Acme policy tickets go to the product's owner; the {product} is owned by the {owner} team."


def test_complaint_often_points_elsewhere():
    # A router that follows the complaint is right only when it matches the owner (~1/4 of tickets).
    dev = DemoTask().load("dev")
    by_complaint = sum(e.meta["complaint_team"] == e.choices[e.gold[0]] for e in dev) / len(dev)
    assert 0.1 < by_complaint < 0.45
    assert sum(1 for _, t in COMPLAINTS if t) >= 24


def test_write_and_load_back_identical(tmp_path):
    task = DemoTask()
    paths = task.write(tmp_path)
    assert sorted(p.name for p in paths) == ["dev.jsonl", "train.jsonl"]
    back = DemoTask(data=str(tmp_path))
    for split in ("train", "dev"):
        assert back.load(split) == task.load(split)
    # and the written files read as MedMCQA too
    from cowest.tasks.medmcqa import MedMCQA

    assert [e.gold for e in MedMCQA(tmp_path).load("dev")] == [e.gold for e in task.load("dev")]


def test_unknown_split_and_bad_sizes():
    with pytest.raises(DataError, match="no split 'test'; splits: train, dev"):
        DemoTask().load("test")
    with pytest.raises(ConfigError, match="n_train \\+ n_dev"):
        generate_rows(300, 100)


def test_parse_answer_team_names():
    task = DemoTask()
    ex = task.load("dev")[0]
    assert task.parse_answer("The Quillon-7 belongs to Firmware.\nAnswer: A") == "A"
    assert task.parse_answer("Answer: Billing team", ex) == "C"
    assert task.parse_answer("Route it to Safety.", ex) == "D"
    assert task.parse_answer("Answer: (B) Logistics", ex) == "B"
    assert task.answer_format() == "a single letter, A, B, C or D"


def test_scores():
    task = DemoTask()
    dev = task.load("dev")
    assert task.score([e.gold[0] for e in dev], dev) == {"accuracy": 100.0, "macro_f1": 100.0}
    assert task.score(["A"] * len(dev), dev)["accuracy"] == 25.0
