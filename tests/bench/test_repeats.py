"""bench/repeats.py counts drafts that repeat their answer line and splits cowest − collab by them."""

import json

from support.bench import load_bench


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_repeating_drafts_are_counted_and_the_difference_split(tmp_path):
    once, twice = "Why.\nAnswer: A", "Why.\nAnswer: A\nAnswer: A"
    _write(tmp_path / "validation" / "round1" / "records.jsonl",
           [{"sft": {"draft": once}, "aligned": {"draft": twice}}, {"sft": {"draft": once}, "aligned": {"draft": once}}])
    _write(tmp_path / "eval" / "predictions" / "collab.jsonl",
           [{"id": "1", "weak_draft": once, "scores": {"em": 1.0}}, {"id": "2", "weak_draft": once, "scores": {"em": 0.0}}])
    _write(tmp_path / "eval" / "predictions" / "cowest.jsonl",
           [{"id": "1", "weak_draft": twice, "scores": {"em": 0.0}}, {"id": "2", "weak_draft": once, "scores": {"em": 1.0}}])
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"primary_metric": "em"}))
    res = load_bench("repeats").repeats(tmp_path)
    assert res["validation"] == {"sft": [0, 2], "aligned": [1, 2]}
    assert res["eval"]["repeating"] == {"collab": 0, "cowest": 1}
    assert res["eval"]["aligned draft repeats"] == {"n": 1, "collab": 1.0, "cowest": 0.0}
    assert res["eval"]["the rest"] == {"n": 1, "collab": 0.0, "cowest": 1.0}


def test_a_draft_is_cut_after_its_first_answer_line():
    cut = load_bench("repeats").cut_after_answer
    assert cut("Why.\nAnswer: A\nMore.\nAnswer: A") == "Why.\nAnswer: A"
    assert cut("Why, no answer line.") == "Why, no answer line."
    assert cut("Why. Answer: inline\nanswer: B\nAnswer: C") == "Why. Answer: inline\nanswer: B"
