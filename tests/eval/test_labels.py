"""Answers per label in the eval report: counts per system and per collaborating system's drafts, the majority-label
baseline, and a collapse onto one label named (the ProsocialDialog large run, bench/RESULTS.md)."""

from __future__ import annotations

from cowest.config import TaskConfig
from cowest.eval.labels import label_table, labels_markdown
from cowest.tasks import get_task


def _setup():
    task = get_task(TaskConfig(name="demo"))
    examples = task.load("dev")[:10]
    return task, examples


def _rows(examples, answers, drafts=None):
    rows = []
    for i, (ex, a) in enumerate(zip(examples, answers)):
        row = {"id": ex.id, "prediction": a, "gold": ex.gold}
        if drafts is not None:
            row |= {"weak_draft": f"The owner decides.\nAnswer: {drafts[i]}", "strong_output": f"Answer: {a}"}
        rows.append(row)
    return rows


def test_counts_majority_and_a_collapse_are_reported():
    task, examples = _setup()
    golds = [ex.gold[0] for ex in examples]
    top_n = max(golds.count(g) for g in golds)  # the 10 dev golds tie (C and D, 3 each): either may be the label
    spread = [golds[i] if i % 2 else "A" for i in range(10)]
    rows = {"weak": _rows(examples, golds),  # answers right, no strong call: no drafts row
            "collab": _rows(examples, spread, drafts=spread),
            "cowest": _rows(examples, ["C"] * 9 + [None], drafts=["C"] * 10)}
    t = label_table(task, rows, examples)
    assert t["gold"] == {g: golds.count(g) for g in set(golds)}
    assert golds.count(t["majority"]["label"]) == top_n and t["majority"]["accuracy"] == 100.0 * top_n / 10
    assert t["systems"]["cowest"] == {"C": 9, "(unparsed)": 1} and t["systems"]["weak"] == {g: golds.count(g)
                                                                                               for g in set(golds)}
    assert set(t["drafts"]) == {"collab", "cowest"} and t["drafts"]["cowest"] == {"C": 10}
    # 9 of 10 answers and 10 of 10 drafts on C are a collapse; collab's spread is not
    assert t["collapsed"] == ["cowest's answers: C on 9 of 10", "cowest's drafts: C on 10 of 10"]
    md = labels_markdown(t)
    assert "| cowest's drafts | 0 | 0 | 10 | 0 | 0 |" in md and "collapsed onto one label" in md
    assert f"({t['majority']['label']}) scores {100.0 * top_n / 10:.1f}% accuracy" in md


def test_free_form_tasks_have_no_label_table():
    task = get_task(TaskConfig(name="ifqa", data=None))
    assert task.labels is None
    assert label_table(task, {"weak": [{"id": "1", "prediction": "x"}]}, []) is None
    assert labels_markdown(None) == ""
