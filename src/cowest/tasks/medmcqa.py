"""MedMCQA (Pal et al. 2022): four-option medical multiple choice, answered with a letter A-D.

Also home of :class:`ChoiceTask` (letter answers, option text accepted when parsing) and of the
MedMCQA row format (``question, opa..opd, cop, exp``) that the demo task reuses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from cowest.errors import DataError
from cowest.tasks.base import Example
from cowest.tasks.data import Row, load_rows
from cowest.tasks.parsing import parse_choice
from cowest.tasks.prosocial import LabelTask

LETTERS = ("A", "B", "C", "D")
OPTION_FIELDS = ("opa", "opb", "opc", "opd")
_CORE_FIELDS = {"id", "question", *OPTION_FIELDS, "cop", "exp"}


def mcq_question(stem: str, choices: Mapping[str, str]) -> str:
    """The text models see: the stem, then one 'A. option' line per choice."""
    return stem.strip() + "".join(f"\n{letter}. {text}" for letter, text in choices.items())


class ChoiceTask(LabelTask):
    """Multiple choice answered with a letter; parsing also accepts the option text."""

    labels: tuple[str, ...] = LETTERS

    def answer_format(self) -> str:
        labels = list(self.labels or ())
        return "a single letter, " + ", ".join(labels[:-1]) + " or " + labels[-1]

    def parse_answer(self, text: str, example: Example | None = None) -> str | None:
        """The chosen letter; pass ``example`` so that an answer given as option text is matched too."""
        return parse_choice(text, self.labels or (), example.choices if example is not None else None)


def _option(row: Row, name: str) -> str:
    value = row.get(name, (str, int, float))
    return str(value).strip()


def _cop(row: Row) -> int | None:
    """The 0-based index of the right option; None when the row is unlabelled (hub test: -1)."""
    cop = row.get("cop", int, required=False)
    if cop is None or cop == -1:
        return None
    if not 0 <= cop < len(OPTION_FIELDS):
        raise DataError(f"{row.where}: cop must be a 0-based option index 0-3, got {cop}")
    return cop


def medmcqa_examples(rows: Sequence[Row]) -> list[Example]:
    """Examples from rows in the MedMCQA hub schema. A split is either fully labelled (``cop``) or
    fully unlabelled (then every gold is empty); a mix is an error at the first unlabelled row."""
    cops = [_cop(r) for r in rows]
    labelled = any(c is not None for c in cops)
    examples = []
    for row, cop in zip(rows, cops):
        if labelled and cop is None:
            raise DataError(f"{row.where}: missing cop (the right option) while other rows have one")
        ident = row.get("id", (str, int), required=False)
        choices = {letter: _option(row, f) for letter, f in zip(LETTERS, OPTION_FIELDS)}
        exp = row.get("exp", str, required=False)
        meta = {k: v for k, v in row.data.items() if k not in _CORE_FIELDS}
        examples.append(
            Example(
                id=str(ident) if ident is not None else str(row.index),
                question=mcq_question(row.get("question", str), choices),
                gold=[LETTERS[cop]] if cop is not None else [],
                rationale=exp.strip() if exp and exp.strip() else None,
                choices=choices,
                meta=meta,
            )
        )
    return examples


class MedMCQA(ChoiceTask):
    name = "medmcqa"
    hub_name = "openlifescienceai/medmcqa"

    def __init__(self, data: str | Path | None = None):
        self.data = data

    def instruction(self) -> str:
        return "Answer the medical multiple-choice question by choosing the single best option."

    def load(self, split: str) -> list[Example]:
        rows = load_rows(self.data, split, task=self.name, hub_name=self.hub_name, hub_splits={"dev": "validation"})
        return medmcqa_examples(rows)
