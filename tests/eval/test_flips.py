"""Flip tables on hand-made rows whose every cell is known, and the Wilson interval against published values."""

import json

import pytest

from cowest.config import load_config
from cowest.eval.flips import flip_tables, flips_markdown, print_flips
from cowest.stats import paired_bootstrap, wilson
from cowest.tasks import get_task
from cowest.tasks.base import Example

TASK = get_task(load_config(None, ["task.name=demo"]).task)  # labels A-D, per-item accuracy
EXAMPLES = [Example(id=f"q{i}", question=f"question {i}", gold=["A"]) for i in range(10)]
# per question: strong alone right, collaboration right, weak draft (A right, B wrong, None: no answer line)
PATTERN = [
    (0, 1, "A"), (0, 1, "B"), (0, 0, "A"), (1, 0, "A"), (1, 1, "B"),
    (1, 1, "A"), (0, 0, None), (1, 1, "B"), (0, 1, None), (1, 1, "A"),
]


def _row(system, i, right, **extra):
    pred = "A" if right else "C"
    return {"id": f"q{i}", "system": system, "prediction": pred, "strong_output": f"Answer: {pred}",
            "gold": ["A"], "scores": {"accuracy": float(right)}, **extra}


def _draft(w):
    return f"I think so.\nAnswer: {w}" if w else "I am not sure."


def rows_by_system():
    strong = [_row("strong", i, s) for i, (s, _, _) in enumerate(PATTERN)]
    collab = [_row("collab", i, c, weak_draft=_draft(w)) for i, (_, c, w) in enumerate(PATTERN)]
    # SuperICL's rows carry the parsed weak answer: it wins over the draft text (here the draft says D)
    supericl = [_row("superICL", i, c, weak_draft="Answer: D", weak_prediction=w) for i, (_, c, w) in enumerate(PATTERN)]
    weak = [{"id": f"q{i}", "prediction": w, "weak_draft": _draft(w), "scores": {"accuracy": float(w == "A")}}
            for i, (_, _, w) in enumerate(PATTERN)]
    return {"strong": strong, "weak": weak, "superICL": supericl, "collab": collab}


def test_every_cell_of_the_flip_table():
    out = flip_tables(TASK, "cot", rows_by_system(), EXAMPLES)
    assert set(out["systems"]) == {"collab", "superICL"}  # weak has no strong output; strong is the reference
    assert "accuracy" in out["right"] and "equals 1" in out["right"]
    for name in ("collab", "superICL"):
        vs_strong = out["systems"][name]["vs_strong"]
        assert {k: vs_strong[k] for k in ("n", "strong_wrong", "helped", "strong_right", "misled", "net")} == {
            "n": 10, "strong_wrong": 5, "helped": 3, "strong_right": 5, "misled": 1, "net": 2}
        assert vs_strong["helped_rate"] == list(wilson(3, 5))
        assert vs_strong["misled_rate"] == list(wilson(1, 5))
        final = [float(c) for _, c, _ in PATTERN]
        alone = [float(s) for s, _, _ in PATTERN]
        assert vs_strong["delta"] == list(paired_bootstrap(final, alone))
        assert vs_strong["delta"][0] == pytest.approx(20.0)  # 7 right vs 5 right of 10
        assert vs_strong["detectable"] > 0

        vs_weak = out["systems"][name]["vs_weak"]
        assert {k: vs_weak[k] for k in ("n", "weak_wrong", "corrected", "weak_right", "corrupted", "net",
                                        "weak_unparsed")} == {
            "n": 10, "weak_wrong": 5, "corrected": 4, "weak_right": 5, "corrupted": 2, "net": 2, "weak_unparsed": 2}
        assert vs_weak["corrected_rate"] == list(wilson(4, 5))
        assert vs_weak["corrupted_rate"] == list(wilson(2, 5))
    json.dumps(out, allow_nan=False)  # metrics.json stays valid JSON


def test_markdown_and_terminal_show_the_cells(capsys):
    out = flip_tables(TASK, "cot", rows_by_system(), EXAMPLES)
    md = flips_markdown(out)
    h = wilson(3, 5)
    assert f"| collab | 10 | 3/5 = 60.0% [{h[1]:.1f}, {h[2]:.1f}] |" in md
    c = wilson(4, 5)
    assert f"| collab | 10 | 4/5 = 80.0% [{c[1]:.1f}, {c[2]:.1f}] | 2/5 = 40.0%" in md
    assert "Against the strong model alone" in md and "Against the weak draft" in md and "Wilson" in md
    print_flips(out)
    shown = capsys.readouterr().out
    assert "helped" in shown and "corrupted" in shown and "collab" in shown


def test_wilson_matches_published_intervals():
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score without continuity correction)
    for k, n, lo, hi in [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
                         (1, 29, 0.0061, 0.1718), (29, 29, 0.8830, 1.0)]:
        p, a, b = wilson(k, n, scale=1.0)
        assert p == pytest.approx(k / n)
        assert (round(a, 4), round(b, 4)) == (lo, hi)
    assert wilson(0, 0) is None
    with pytest.raises(ValueError):
        wilson(3, 2)


def test_empty_subsets_have_no_rate():
    rows = rows_by_system()
    all_right = {"strong": [dict(r, scores={"accuracy": 1.0}) for r in rows["strong"]], "collab": rows["collab"]}
    t = flip_tables(TASK, "cot", all_right, EXAMPLES)["systems"]["collab"]["vs_strong"]
    assert t["strong_wrong"] == 0 and t["helped"] == 0 and t["helped_rate"] is None
    assert "0/0 |" in flips_markdown(flip_tables(TASK, "cot", all_right, EXAMPLES))


def test_missing_strong_or_knowledge_format_is_skipped_with_a_note():
    rows = rows_by_system()
    no_strong = flip_tables(TASK, "cot", {"collab": rows["collab"]}, EXAMPLES)
    assert no_strong["systems"]["collab"]["vs_strong"] is None
    assert no_strong["systems"]["collab"]["vs_weak"]["corrected"] == 4
    assert "strong system was not run" in no_strong["notes"]["flips vs strong"]
    md = flips_markdown(no_strong)
    assert "Against the strong model alone" not in md and "strong system was not run" in md

    knowledge = flip_tables(TASK, "knowledge", {"strong": rows["strong"], "collab": rows["collab"]}, EXAMPLES)
    assert knowledge["systems"]["collab"]["vs_weak"] is None
    assert knowledge["systems"]["collab"]["vs_strong"]["helped"] == 3
    assert "knowledge" in knowledge["notes"]["flips vs weak"]

    none = flip_tables(TASK, "cot", {"strong": rows["strong"], "weak": rows["weak"]}, EXAMPLES)
    assert none["systems"] == {} and "no collaborating system" in none["notes"]["flips"]


def test_questions_are_paired_by_id_not_file_order():
    rows = rows_by_system()
    shuffled = {"strong": list(reversed(rows["strong"])), "collab": rows["collab"][3:] + rows["collab"][:3]}
    t = flip_tables(TASK, "cot", shuffled, EXAMPLES)["systems"]["collab"]
    assert (t["vs_strong"]["helped"], t["vs_strong"]["misled"]) == (3, 1)
    # a question only one side answered is left out of the vs-strong table
    partial = {"strong": rows["strong"][:8], "collab": rows["collab"]}
    assert flip_tables(TASK, "cot", partial, EXAMPLES)["systems"]["collab"]["vs_strong"]["n"] == 8


def test_the_drafts_alone_compare_aligned_with_sft():
    """With collab and cowest, the report compares their drafts with no strong call: alignment may improve the
    draft while the strong model passes on little of it."""
    rows = rows_by_system()
    # the aligned drafts answer A (right) everywhere but q1; the SFT drafts are right on 5 of 10 (PATTERN)
    rows["cowest"] = [_row("cowest", i, c, weak_draft=_draft("B" if i == 1 else "A"))
                      for i, (_, c, _) in enumerate(PATTERN)]
    out = flip_tables(TASK, "cot", rows, EXAMPLES)
    d = out["drafts"]
    assert (d["n"], d["aligned"], d["sft"]) == (10, 90.0, 50.0)
    aligned = [float(i != 1) for i in range(10)]
    sft = [float(w == "A") for _, _, w in PATTERN]
    assert d["delta"] == pytest.approx(list(paired_bootstrap(aligned, sft)))
    assert "aligned drafts 90.0% right against collab's SFT drafts 50.0%" in flips_markdown(out)
    assert "drafts" not in flip_tables(TASK, "cot", rows_by_system(), EXAMPLES)  # no cowest: nothing to compare
