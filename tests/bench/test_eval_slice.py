"""bench/eval_slice.py: one system against another on a slice of a finished eval's questions."""

import json
import sys

import pytest

from support.bench import load_bench


def _predictions(run, system, ids, scores):
    p = run / "eval" / "predictions"
    p.mkdir(parents=True, exist_ok=True)
    rows = [{"id": i, "system": system, "scores": {"accuracy": s}} for i, s in zip(ids, scores)]
    (p / f"{system}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _run(monkeypatch, capsys, *argv):
    es = load_bench("eval_slice")
    monkeypatch.setattr(sys, "argv", ["eval_slice.py", *map(str, argv)])
    es.main()
    return capsys.readouterr().out


def test_the_slice_after_the_first_look_alone(tmp_path, monkeypatch, capsys):
    ids = [f"q{i}" for i in range(8)]
    _predictions(tmp_path, "cowest", ids, [0, 0, 0, 0, 1, 1, 1, 0])
    _predictions(tmp_path, "collab", ids[::-1], [0, 0, 0, 0, 1, 1, 1, 1][::-1])  # another order: paired by id
    out = _run(monkeypatch, capsys, tmp_path, "--from", 4)
    assert "questions 4:8 (n = 4)" in out and "cowest 75.0, collab 100.0" in out and "collab -25.0 [" in out
    out = _run(monkeypatch, capsys, tmp_path, "--to", 4)
    assert "(n = 4)" in out and "+0.0" in out


def test_a_missing_system_or_a_bad_line_is_named(tmp_path, monkeypatch, capsys):
    _predictions(tmp_path, "cowest", ["q1", "q2"], [1, 0])
    with pytest.raises(SystemExit, match="no predictions for 'collab'.*systems here: cowest"):
        _run(monkeypatch, capsys, tmp_path)
    (tmp_path / "eval" / "predictions" / "collab.jsonl").write_text('{"id": "q1", "scores": {"accuracy": 1}}\n{oops\n')
    with pytest.raises(SystemExit, match=r"collab.jsonl:2: not valid JSON"):
        _run(monkeypatch, capsys, tmp_path)
