"""A user's own task from JSON Lines (or JSON array) files, described by ``task.*`` config fields.

Three kinds, chosen from the config:

- ``choices_field`` set: multiple choice like MedMCQA. Choices are a list of option strings (lettered
  A, B, ...) or a mapping letter -> text; the answer may be the letter, a 0-based index or the option
  text. Metrics: accuracy and macro-F1 over the letters.
- ``metric: accuracy`` without choices: label classification over the sorted set of gold answers
  found in the data (all split files). Metrics: accuracy and macro-F1.
- otherwise (``metric: em_f1``): free-form answers (a string or a list of acceptable strings), EM / F1.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cowest.config import TaskConfig
from cowest.errors import ConfigError, DataError
from cowest.tasks.base import Example, Task
from cowest.tasks.data import Row, available_splits, load_rows, read_rows
from cowest.tasks.ifqa import freeform_item_scores, freeform_score
from cowest.tasks.medmcqa import mcq_question
from cowest.tasks.parsing import parse_choice, parse_freeform, parse_label
from cowest.tasks.prosocial import label_item_scores, label_score

KINDS = ("mcq", "label", "freeform")


class JsonlTask(Task):
    name = "jsonl"

    def __init__(self, cfg: TaskConfig):
        if cfg.data is None:
            raise ConfigError("task.data: the jsonl task needs a directory (<split>.jsonl files) or a file")
        self.cfg = cfg
        self.data = cfg.data
        if cfg.choices_field:
            self.kind = "mcq"
        elif cfg.metric == "accuracy":
            self.kind = "label"
        else:
            self.kind = "freeform"
        if self.kind == "freeform":
            self.metric_names, self.primary_metric = ("em", "f1"), "em"
        else:
            self.metric_names, self.primary_metric = ("accuracy", "macro_f1"), "accuracy"
        self._labels: tuple[str, ...] | None = None

    # -- the closed answer set is whatever the data holds, so it is read from every split file once
    @property  # type: ignore[override]
    def labels(self) -> tuple[str, ...] | None:
        if self.kind == "freeform":
            return None
        if self._labels is None:
            found: set[str] = set()
            for path in self._all_files():
                for ex in self._examples(read_rows(path)):
                    found.update(ex.choices if ex.choices is not None else ex.gold)
            self._labels = tuple(sorted(found))
        return self._labels

    def _all_files(self) -> list[Path]:
        path = Path(self.data).expanduser()
        if path.is_file():
            return [path]
        if not path.is_dir():
            raise DataError(f"{path}: no such file or directory (task.data)")
        files = []
        for split in available_splits(path):
            files += [p for p in (path / f"{split}.jsonl", path / f"{split}.json") if p.is_file()][:1]
        return files

    def instruction(self) -> str:
        if self.kind == "mcq":
            return "Answer the multiple-choice question by choosing the single best option."
        if self.kind == "label":
            return "Classify the input into one of the labels."
        return "Answer the question with a short answer."

    def answer_format(self) -> str:
        if self.kind == "freeform":
            return "a short answer of a few words"
        labels = list(self.labels or ())
        listed = ", ".join(labels[:-1]) + " or " + labels[-1] if len(labels) > 1 else "".join(labels)
        return f"a single letter, {listed}" if self.kind == "mcq" else f"one label: {listed}"

    def load(self, split: str) -> list[Example]:
        return self._examples(load_rows(self.data, split, task=self.name, hub_name=None))

    def parse_answer(self, text: str, example: Example | None = None) -> str | None:
        if self.kind == "freeform":
            return parse_freeform(text)
        if self.kind == "mcq":
            return parse_choice(text, self.labels or (), example.choices if example is not None else None)
        return parse_label(text, self.labels or ())

    def item_scores(self, prediction: str | None, example: Example) -> dict[str, float]:
        if self.kind == "freeform":
            return freeform_item_scores(prediction, example)
        return label_item_scores(prediction, example)

    def score(self, predictions: Sequence[str | None], examples: Sequence[Example]) -> dict[str, float]:
        if self.kind == "freeform":
            return freeform_score(predictions, examples)
        return label_score(predictions, examples, self.labels or ())

    # -- rows -> examples
    def _examples(self, rows: Sequence[Row]) -> list[Example]:
        return [self._example(r) for r in rows]

    def _example(self, row: Row) -> Example:
        cfg = self.cfg
        if cfg.id_field:
            ident = str(row.get(cfg.id_field, (str, int)))
        else:
            ident = str(row.index)
        question = row.get(cfg.question_field, str).strip()
        rationale = row.get(cfg.rationale_field, str, required=False) if cfg.rationale_field else None
        if rationale is not None:
            rationale = rationale.strip() or None
        if self.kind == "mcq":
            assert cfg.choices_field is not None
            choices = _choices(row, cfg.choices_field)
            gold = [_gold_letter(row, cfg.answer_field, choices)]
            return Example(ident, mcq_question(question, choices), gold, rationale, choices)
        gold = _answers(row, cfg.answer_field)
        return Example(ident, question, gold, rationale)


def _answers(row: Row, name: str) -> list[str]:
    value = row.get(name, (str, int, float, list))
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
        raise DataError(f"{row.where}: field {name!r} must be a string or a non-empty list of strings")
    return [str(v).strip() for v in values]


def _choices(row: Row, name: str) -> dict[str, str]:
    value: Any = row.get(name, (list, dict))
    if isinstance(value, list):
        if not 2 <= len(value) <= 26:
            raise DataError(f"{row.where}: field {name!r} must hold 2-26 options, got {len(value)}")
        items = list(zip(string.ascii_uppercase, value))
    else:
        items = list(value.items())
        if not all(isinstance(k, str) and len(k) == 1 and k.isalpha() for k, _ in items) or len(items) < 2:
            raise DataError(f"{row.where}: field {name!r} must map single letters to option texts")
        items = [(k.upper(), v) for k, v in items]
    if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for _, v in items):
        raise DataError(f"{row.where}: field {name!r}: every option must be a string")
    return {k: str(v).strip() for k, v in items}


def _gold_letter(row: Row, name: str, choices: dict[str, str]) -> str:
    """The gold option's letter, from a letter, a 0-based index or the option text."""
    value = row.get(name, (str, int, list))
    if isinstance(value, list):
        if len(value) != 1:
            raise DataError(f"{row.where}: field {name!r}: a multiple-choice answer must be one value")
        value = value[0]
    letters = list(choices)
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(letters):
            return letters[value]
        raise DataError(f"{row.where}: answer index {value} is out of range 0-{len(letters) - 1}")
    if isinstance(value, str):
        v = value.strip()
        if v.upper() in choices and len(v) == 1:
            return v.upper()
        folded = " ".join(v.lower().split())
        for letter, text in choices.items():
            if " ".join(text.lower().split()) == folded:
                return letter
    raise DataError(f"{row.where}: answer {value!r} is not a letter ({', '.join(letters)}), an index or an option text")
