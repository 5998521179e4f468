"""What every task provides: examples, answer parsing, and metrics.

A :class:`Task` turns raw rows into :class:`Example` objects, parses a model's free-form output into
an answer (``None`` when nothing can be parsed), and scores. Prompts live in
:mod:`cowest.inference.prompts`; a task only says what it asks for (:meth:`Task.instruction`) and how an
answer is written (:meth:`Task.answer_format`).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Example:
    id: str  # the dataset's own id, or the 0-based row index in the split file as a string
    question: str  # the text shown to models (MCQ: the stem plus lettered options)
    gold: list[str]  # acceptable answers (IfQA: several strings; classification: one label / letter)
    rationale: str | None = None  # a gold explanation where the dataset has one (MedMCQA `exp`)
    choices: dict[str, str] | None = None  # MCQ letter -> option text
    meta: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    name: str
    metric_names: tuple[str, ...]  # e.g. ("em", "f1") or ("accuracy", "macro_f1"); values in percent
    primary_metric: str
    labels: tuple[str, ...] | None = None  # closed answer set (letters / safety labels); None = free-form

    @abstractmethod
    def load(self, split: str) -> list[Example]:
        """All examples of a split, in file order. Raises DataError naming file:line on bad rows."""

    @abstractmethod
    def instruction(self) -> str:
        """One sentence saying what to do, e.g. 'Answer the counterfactual question.'"""

    @abstractmethod
    def answer_format(self) -> str:
        """How the final answer must be written, e.g. 'a single letter, A, B, C or D'."""

    @abstractmethod
    def parse_answer(self, text: str, example: Example | None = None) -> str | None:
        """The answer in a model's free-form output, normalised to the task's answer space; None if none.

        ``example`` lets multiple-choice tasks read an answer written as the option's text."""

    def gold_answer(self, example: Example) -> str:
        """The canonical gold answer string (used in SFT targets)."""
        return example.gold[0]

    @abstractmethod
    def item_scores(self, prediction: str | None, example: Example) -> dict[str, float]:
        """Per-example scores in [0, 1] (e.g. {'em': 1.0, 'f1': 0.67}); used for bootstrap CIs."""

    @property
    def primary_item_key(self) -> str:
        """The key of :meth:`item_scores` behind the primary metric: what decides a question right or wrong in
        every paired comparison (eval, flips, routing, validation, the probe)."""
        return "em" if self.primary_metric == "em" else "accuracy"

    def item_reward(self, prediction: str | None, example: Example) -> float:
        """The scalar in [0, 1] the `metric` evaluator uses: F1 for free-form, correctness otherwise."""
        scores = self.item_scores(prediction, example)
        return scores.get("f1", scores.get("accuracy", 0.0))

    @abstractmethod
    def score(self, predictions: Sequence[str | None], examples: Sequence[Example]) -> dict[str, float]:
        """Corpus metrics in percent over parsed predictions aligned with examples."""


def subsample(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    """The first ``n`` examples after a seeded shuffle (all of them, in file order, when n is None)."""
    if n is None or n >= len(examples):
        return list(examples)
    rng = random.Random(seed)
    idx = list(range(len(examples)))
    rng.shuffle(idx)
    return [examples[i] for i in sorted(idx[:n])]
