"""The examples each stage works on: the training questions (SFT, feedback), the held-out training questions
(validation, the gate, probe), feedback's extra questions, and the evaluation questions.

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


def _shuffled(cfg: RunConfig) -> tuple[Task, list[Example], list[int]]:
    """The task, its training split, and the seeded shuffle of it that ``subsample`` makes: its first
    ``task.n_train`` are the training questions, the next ones held out, the last
    ``feedback.extra_questions`` feedback-only."""
    task = get_task(cfg.task)
    pool = task.load(cfg.task.train_split)
    idx = list(range(len(pool)))
    random.Random(cfg.seed).shuffle(idx)
    return task, pool, idx


def extra_train_examples(cfg: RunConfig) -> list[Example]:
    """``feedback.extra_questions`` training-split questions outside SFT's: the *last* ones of the shuffle
    that picks ``task.n_train``, so the held-out questions (taken from just after n_train) stay the same
    whatever their number, and never overlap them while the split has room."""
    n = cfg.feedback.extra_questions
    if n <= 0:
        return []
    _, pool, idx = _shuffled(cfg)
    n_train = len(pool) if cfg.task.n_train is None else min(cfg.task.n_train, len(pool))
    if n > len(pool) - n_train:
        raise DataError(
            f"feedback.extra_questions={n} needs that many training-split questions outside the {n_train} SFT "
            f"trains on, but {cfg.task.train_split!r} has {len(pool)}: lower it or task.n_train")
    train = [pool[i] for i in idx[:n_train]]
    extra, _ = drop_seen([pool[i] for i in sorted(idx[len(pool) - n:])], train)
    return extra


def heldout_train_examples(cfg: RunConfig, n: int, *, purpose: str) -> tuple[Task, list[Example]]:
    """``n`` training-split questions the run never trains on: the next ``n`` of the same seeded shuffle that
    picks ``task.n_train`` (so they are outside SFT, feedback and DPO), from ``task.heldout_from`` where set,
    with questions repeated from the training subsample dropped, and never one of the feedback-only
    ``feedback.extra_questions`` (the end of the shuffle). For tuning and calibration (``purpose`` names it in
    errors): never the eval split."""
    task, pool, idx = _shuffled(cfg)
    n_train = cfg.task.n_train
    start = n_train if cfg.task.heldout_from is None else cfg.task.heldout_from
    spare = len(pool) - (start if start is not None else len(pool))
    if n <= 0 or spare <= 0:
        where = "" if cfg.task.heldout_from is None else f" and from task.heldout_from={start}"
        raise DataError(
            f"{purpose} needs training-split questions outside the {n_train if n_train is not None else 'all'} "
            f"used for training{where}, but {cfg.task.train_split!r} has {len(pool)}: set task.n_train"
            f"{'' if not where else ' and task.heldout_from'} below {len(pool)}")
    end = min(start + n, len(pool) - cfg.feedback.extra_questions)
    if end < start + n:
        log.warning("%s: %d held-out question(s) instead of %d: the rest of %r are feedback.extra_questions",
                    purpose, max(end - start, 0), n, cfg.task.train_split)
    train = [pool[i] for i in idx[:n_train]]
    held = [pool[i] for i in sorted(idx[start:end])]
    held, _ = drop_seen(held, train)
    if not held:
        raise DataError(f"{purpose} has no held-out training questions left: lower feedback.extra_questions "
                        "or task.n_train")
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
