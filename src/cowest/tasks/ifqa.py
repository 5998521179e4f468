"""IfQA (Yu et al. 2023): counterfactual questions ("If X had not happened, ...?") with free-form
answers, scored by SQuAD exact match and token F1 against the best of several gold strings.

Also home of :class:`FreeformTask`, the scoring shared by free-form tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cowest.errors import DataError
from cowest.tasks.base import Example, Task
from cowest.tasks.data import Row, load_rows
from cowest.tasks.metrics import exact_match, mean_percent, token_f1
from cowest.tasks.parsing import parse_freeform


def freeform_item_scores(prediction: str | None, example: Example) -> dict[str, float]:
    if not example.gold:
        raise DataError(f"example {example.id}: no gold answer (is this split unlabelled?)")
    return {"em": exact_match(prediction, example.gold), "f1": token_f1(prediction, example.gold)}


def freeform_score(predictions: Sequence[str | None], examples: Sequence[Example]) -> dict[str, float]:
    """Exact match and token F1, in percent."""
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
    items = [freeform_item_scores(p, ex) for p, ex in zip(predictions, examples)]
    return {"em": mean_percent([s["em"] for s in items]), "f1": mean_percent([s["f1"] for s in items])}


class FreeformTask(Task):
    metric_names = ("em", "f1")
    primary_metric = "em"
    labels = None

    def answer_format(self) -> str:
        return "a short answer of a few words"

    def parse_answer(self, text: str, example: Example | None = None) -> str | None:
        return parse_freeform(text)

    def item_scores(self, prediction: str | None, example: Example) -> dict[str, float]:
        return freeform_item_scores(prediction, example)

    def score(self, predictions: Sequence[str | None], examples: Sequence[Example]) -> dict[str, float]:
        return freeform_score(predictions, examples)


class IfQA(FreeformTask):
    """IfQA from a local copy of the official ``full_split`` files (there is no hub copy).

    With ``with_context`` (default) the question shown to models is preceded by the dataset's
    supporting passage(s), which hold the facts that the counterfactual premise changes.
    """

    name = "ifqa"

    def __init__(self, data: str | Path | None = None, *, with_context: bool = True):
        self.data = data
        self.with_context = with_context

    def instruction(self) -> str:
        return "Answer the counterfactual question, assuming its premise is true, with a short answer."

    def load(self, split: str) -> list[Example]:
        if self.data is None:
            raise DataError(
                "IfQA is not on the Hugging Face hub: set task.data to a directory holding the official "
                "IfQA full_split files (train.json, dev.json) from the authors' repository"
            )
        rows = load_rows(self.data, split, task=self.name, hub_name=None)
        return [self._example(r) for r in rows]

    def _example(self, row: Row) -> Example:
        question = row.get("question", str).strip()
        answers = [a.strip() for a in row.str_list("answers") or []]
        context = row.str_list("context", required=False, allow_str=True) or []
        ident = row.get("idx", (int, str), required=False)
        text = question
        if self.with_context and context:
            text = "Context: " + "\n".join(c.strip() for c in context) + f"\n\nQuestion: {question}"
        return Example(
            id=str(ident) if ident is not None else str(row.index),
            question=text,
            gold=answers,
            meta={"question": question, "context": context},
        )
