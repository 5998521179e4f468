"""The examples each stage works on: the training questions (SFT, feedback) and the evaluation questions.

One place, so every stage sees the same subsample for the same config, and evaluation never scores a
question the weak model was trained on: an eval item whose question text also appears in the training
split is dropped, with a warning giving the count (IfQA's dev split repeats 9 of its 700 items from train).
"""

from __future__ import annotations

import logging
import random

from cowest.config import RunConfig
from cowest.errors import DataError
from cowest.tasks import get_task
from cowest.tasks.base import Example, Task, subsample

log = logging.getLogger(__name__)


def train_examples(cfg: RunConfig) -> tuple[Task, list[Example]]:
    """The task and its training questions: ``task.n_train`` of them after a seeded shuffle."""
    task = get_task(cfg.task)
    return task, subsample(task.load(cfg.task.train_split), cfg.task.n_train, cfg.seed)


def heldout_train_examples(cfg: RunConfig, n: int, *, purpose: str) -> tuple[Task, list[Example]]:
    """``n`` training-split questions the run never trains on: the next ``n`` of the same seeded shuffle that
    picks ``task.n_train`` (so they are outside SFT, feedback and DPO), with questions repeated from the
    training subsample dropped. For tuning and calibration (``purpose`` names it in errors): never the eval
    split."""
    task = get_task(cfg.task)
    pool = task.load(cfg.task.train_split)
    n_train = cfg.task.n_train
    spare = len(pool) - (n_train if n_train is not None else len(pool))
    if n <= 0 or spare <= 0:
        raise DataError(
            f"{purpose} needs training-split questions outside the {n_train if n_train is not None else 'all'} "
            f"used for training, but {cfg.task.train_split!r} has {len(pool)}: set task.n_train below {len(pool)}")
    rng = random.Random(cfg.seed)
    idx = list(range(len(pool)))
    rng.shuffle(idx)  # the shuffle subsample() makes: its first n_train are the training questions
    train = [pool[i] for i in idx[:n_train]]
    held = [pool[i] for i in sorted(idx[n_train:n_train + n])]
    held, _ = drop_seen(held, train)
    return task, held


def _key(ex: Example) -> str:
    return " ".join(ex.question.split()).casefold()


def drop_seen(examples: list[Example], seen: list[Example]) -> tuple[list[Example], int]:
    """``examples`` without those whose question is in ``seen``, and how many were dropped. When every one
    would go, the two splits are the same data (e.g. a single JSONL file serves both): nothing is dropped."""
    keys = {_key(ex) for ex in seen}
    kept = [ex for ex in examples if _key(ex) not in keys]
    if not kept:
        return list(examples), 0
    return kept, len(examples) - len(kept)


def eval_examples(cfg: RunConfig, task: Task) -> tuple[list[Example], int]:
    """The evaluation questions not seen in training (``task.n_eval`` after a seeded shuffle), and how many
    of the split's items were dropped as repeats of training items."""
    t = cfg.task
    examples = task.load(t.eval_split)
    dropped = 0
    if t.train_split != t.eval_split:
        try:
            train = task.load(t.train_split)
        except DataError:
            train = []  # no training split: nothing to overlap with
        examples, dropped = drop_seen(examples, train)
        if dropped:
            log.warning("%s: dropped %d %s item(s) whose question is also in %s", task.name, dropped,
                        t.eval_split, t.train_split)
    examples = subsample(examples, t.n_eval, cfg.seed)
    if not examples:
        from cowest.tasks.data import split_file

        where = f" ({split_file(t.data, t.eval_split)})" if t.data else ""
        raise DataError(f"task {task.name!r} split {t.eval_split!r}{where} has no examples")
    return examples, dropped
