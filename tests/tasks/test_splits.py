"""Which questions each stage sees: the training subsample, and eval items that are not repeats of training ones."""

import json
import logging

import pytest

from cowest.config import load_config
from cowest.errors import DataError
from cowest.tasks import get_task
from cowest.tasks.base import Example
from cowest.tasks.splits import drop_seen, eval_examples, train_examples


def _ex(i, q):
    return Example(id=str(i), question=q, gold=["x"])


def test_drop_seen_matches_questions_up_to_spacing_and_case():
    kept, dropped = drop_seen([_ex(0, "What is  X?"), _ex(1, "new one")], [_ex(9, "what is x?")])
    assert [e.id for e in kept] == ["1"] and dropped == 1


def test_drop_seen_keeps_a_split_that_is_the_training_data_itself():
    same = [_ex(0, "a"), _ex(1, "b")]
    kept, dropped = drop_seen(same, same)
    assert kept == same and dropped == 0


def _ifqa_dir(tmp_path, train, dev):
    for name, rows in (("train", train), ("dev", dev)):
        (tmp_path / f"{name}.json").write_text(json.dumps(
            [{"idx": f"{name}{i}", "question": q, "answers": ["a"], "context": ["c"]} for i, q in enumerate(rows)]))
    return tmp_path


def test_eval_examples_drop_training_repeats_and_warn(tmp_path, caplog):
    data = _ifqa_dir(tmp_path, ["q1", "q2"], ["q2", "q3", "q4"])
    cfg = load_config(None, ["task.name=ifqa", f"task.data={data}"])
    with caplog.at_level(logging.WARNING, logger="cowest.tasks.splits"):
        exs, dropped = eval_examples(cfg, get_task(cfg.task))
    assert dropped == 1 and [e.id for e in exs] == ["dev1", "dev2"]
    assert "dropped 1 dev item" in caplog.text
    task, train = train_examples(load_config(None, ["task.name=ifqa", f"task.data={data}", "task.n_train=1"]))
    assert task.name == "ifqa" and len(train) == 1


def test_eval_examples_without_any_row_is_a_data_error(tmp_path):
    data = _ifqa_dir(tmp_path, ["q1"], [])
    cfg = load_config(None, ["task.name=ifqa", f"task.data={data}"])
    with pytest.raises(DataError, match="has no examples"):
        eval_examples(cfg, get_task(cfg.task))


def test_real_ifqa_dev_loses_its_nine_training_repeats(shared_data):
    cfg = load_config(None, ["task.name=ifqa", f"task.data={shared_data / 'ifqa'}"])
    task = get_task(cfg.task)
    exs, dropped = eval_examples(cfg, task)
    assert dropped == 9 and len(exs) == len(task.load("dev")) - 9


def test_heldout_train_examples_are_outside_the_training_subsample(tmp_path):
    from cowest.tasks.splits import heldout_train_examples

    rows = [{"question": f"question {i}?", "answer": "yes"} for i in range(30)]
    rows.append({"question": "question 3?", "answer": "yes"})  # a repeat of a training question
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = load_config(None, ["task.name=jsonl", f"task.data={path}", "task.n_train=10", "seed=3"])
    _, train = train_examples(cfg)
    _, held = heldout_train_examples(cfg, 100, purpose="validation")
    train_q = {e.question for e in train}
    assert len(train) == 10 and held and not train_q & {e.question for e in held}
    assert len(held) + len(train) <= 31
    _, first5 = heldout_train_examples(cfg, 5, purpose="validation")
    assert {e.id for e in first5} <= {e.id for e in held}  # a larger n extends a smaller one


def test_heldout_train_examples_refuse_when_training_uses_everything(tmp_path):
    from cowest.tasks.splits import heldout_train_examples

    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({"question": f"q{i}", "answer": "a"}) for i in range(5)) + "\n")
    cfg = load_config(None, ["task.name=jsonl", f"task.data={path}"])
    with pytest.raises(DataError, match="gate calibration needs training-split questions.*task.n_train below 5"):
        heldout_train_examples(cfg, 3, purpose="gate calibration")


def _jsonl_cfg(tmp_path, n, *overrides):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({"question": f"question {i}?", "answer": "yes"}) for i in range(n)) + "\n")
    return load_config(None, ["task.name=jsonl", f"task.data={path}", "seed=3", *overrides])


def test_extra_feedback_questions_are_outside_training_and_held_out_questions(tmp_path):
    from cowest.tasks.splits import extra_train_examples, heldout_train_examples

    base = _jsonl_cfg(tmp_path, 40, "task.n_train=10")
    cfg = _jsonl_cfg(tmp_path, 40, "task.n_train=10", "feedback.extra_questions=8")
    assert extra_train_examples(base) == []
    _, train = train_examples(cfg)
    extra = extra_train_examples(cfg)
    _, held = heldout_train_examples(cfg, 12, purpose="validation")
    ids = lambda xs: {e.id for e in xs}  # noqa: E731
    assert len(extra) == 8 and not ids(extra) & ids(train) and not ids(extra) & ids(held)
    # the held-out questions do not move with the number of extra questions: variants share validation
    assert ids(held) == ids(heldout_train_examples(base, 12, purpose="validation")[1])
    # where the split runs out, held-out questions give way (fewer, with a warning) rather than overlap
    _, short = heldout_train_examples(cfg, 30, purpose="validation")
    assert len(short) == 40 - 10 - 8 and not ids(short) & ids(extra)


def test_extra_feedback_questions_beyond_the_split_are_a_data_error(tmp_path):
    from cowest.tasks.splits import extra_train_examples

    cfg = _jsonl_cfg(tmp_path, 12, "task.n_train=10", "feedback.extra_questions=3")
    with pytest.raises(DataError, match="extra_questions=3 needs .* outside the 10 SFT trains on"):
        extra_train_examples(cfg)


def test_heldout_from_pins_the_held_out_questions_across_training_sizes(tmp_path):
    """A sweep over task.n_train validates every variant on the same questions: those from task.heldout_from."""
    from cowest.tasks.splits import heldout_train_examples

    ids = lambda xs: {e.id for e in xs}  # noqa: E731
    small = _jsonl_cfg(tmp_path, 60, "task.n_train=10", "task.heldout_from=20")
    large = _jsonl_cfg(tmp_path, 60, "task.n_train=20", "task.heldout_from=20")
    _, held_small = heldout_train_examples(small, 15, purpose="validation")
    _, held_large = heldout_train_examples(large, 15, purpose="validation")
    assert len(held_small) == 15 and ids(held_small) == ids(held_large)
    assert not ids(held_large) & ids(train_examples(large)[1])  # outside the larger training set too
    # unset, they follow n_train: the small run's would be training questions of the large one
    _, unpinned = heldout_train_examples(_jsonl_cfg(tmp_path, 60, "task.n_train=10"), 15, purpose="validation")
    assert ids(unpinned) & ids(train_examples(large)[1])


def test_heldout_from_past_the_split_is_a_data_error_naming_it(tmp_path):
    from cowest.tasks.splits import heldout_train_examples

    cfg = _jsonl_cfg(tmp_path, 12, "task.n_train=4", "task.heldout_from=12")
    with pytest.raises(DataError, match="from task.heldout_from=12.*task.n_train and task.heldout_from below 12"):
        heldout_train_examples(cfg, 3, purpose="validation")
