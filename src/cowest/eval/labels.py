"""Label tasks: how often each system answers each label, against the gold labels and always answering the majority.

A weak model aligned on 0/1 feedback can learn the training split's label prior instead of better drafts, and the
strong model follows the draft's label: ProsocialDialog at the large scale (bench/RESULTS.md) had 197 of 200 aligned
drafts on the majority label, cowest − collab +8.5 accuracy with macro-F1 −0.2, and always answering that label
scored above every system; the demo's letter collapse is the same. Accuracy alone hides it; this table shows it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from cowest.eval.flips import weak_answer

# a system that gives one label for this share of the questions is called collapsed in the report
COLLAPSE_SHARE = 0.8
UNPARSED = "(unparsed)"


def label_table(task: Any, rows_by_system: dict[str, Sequence[dict[str, Any]]],
                examples: Sequence[Any]) -> dict[str, Any] | None:
    """``{"gold", "majority", "systems": {name: counts}, "drafts": {name: counts}, "collapsed": [...]}`` for a task
    with a closed label set (None for free-form tasks). Counts are over the questions each system answered."""
    if not getattr(task, "labels", None):
        return None
    by_id = {ex.id: ex for ex in examples}
    gold = Counter(ex.gold[0] for ex in examples if ex.gold)
    n = sum(gold.values())
    if not n:
        return None
    top, top_n = gold.most_common(1)[0]
    out: dict[str, Any] = {"labels": list(task.labels), "gold": dict(gold),
                           "majority": {"label": top, "accuracy": 100.0 * top_n / n},
                           "systems": {}, "drafts": {}, "collapsed": []}
    for name, rows in rows_by_system.items():
        if not rows:
            continue
        out["systems"][name] = dict(Counter(r.get("prediction") or UNPARSED for r in rows))
        if any(r.get("weak_draft") and "strong_output" in r for r in rows):  # a collaborating system's drafts
            out["drafts"][name] = dict(Counter(weak_answer(task, r, by_id.get(str(r["id"]))) or UNPARSED for r in rows))
    for side, tables in (("answers", out["systems"]), ("drafts", out["drafts"])):
        for name, counts in tables.items():
            label, c = Counter(counts).most_common(1)[0]
            total = sum(counts.values())
            if label != UNPARSED and c >= COLLAPSE_SHARE * total:
                out["collapsed"].append(f"{name}'s {side}: {label} on {c} of {total}")
    return out


def labels_markdown(table: dict[str, Any] | None) -> str:
    if not table:
        return ""
    seen = {k for c in (*table["systems"].values(), *table["drafts"].values()) for k in c}
    labels = list(table["labels"]) + sorted(seen - set(table["labels"]) - {UNPARSED}) + [UNPARSED]
    head = ["", *labels]
    rows = [["gold", *(str(table["gold"].get(k, 0)) for k in labels)]]
    rows += [[name, *(str(c.get(k, 0)) for k in labels)] for name, c in table["systems"].items()]
    rows += [[f"{name}'s drafts", *(str(c.get(k, 0)) for k in labels)] for name, c in table["drafts"].items()]
    m = table["majority"]
    lines = ["## Answers per label", "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|",
             *("| " + " | ".join(r) + " |" for r in rows), "",
             f"Always answering the most common gold label ({m['label']}) scores {m['accuracy']:.1f}% accuracy."]
    for c in table["collapsed"]:
        lines.append(f"- **collapsed onto one label**: {c}. An accuracy gain that comes with it is the label "
                     "prior, not better drafts: compare macro-F1.")
    return "\n".join(lines) + "\n"
