import json

import pytest

from cowest.errors import DataError
from cowest.io import JsonlAppender, iter_jsonl


def test_iter_jsonl_tolerates_bom_and_blank_lines(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes("\ufeff".encode() + b'{"id": 1}\n\n{"id": 2}\n')
    assert [(n, o["id"]) for n, o in iter_jsonl(p)] == [(1, 1), (3, 2)]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"id": 1}\n{"id": \n', r"a.jsonl:2: not valid JSON"),
        ('{"id": 1}\n[1, 2]\n', r"a.jsonl:2: expected a JSON object, got list"),
        ('"text"\n', r"a.jsonl:1: expected a JSON object, got str"),
    ],
)
def test_iter_jsonl_errors_name_file_and_line(tmp_path, content, message):
    p = tmp_path / "a.jsonl"
    p.write_text(content)
    with pytest.raises(DataError, match=message):
        list(iter_jsonl(p))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        list(iter_jsonl(tmp_path / "x.jsonl"))


def test_appender_resumes_and_repairs_torn_line(tmp_path):
    p = tmp_path / "out.jsonl"
    with JsonlAppender(p) as out:
        out.write({"id": "a", "v": 1})
        out.write({"id": "b", "v": 2})
        out.write({"id": "a", "v": 99})  # duplicate key: ignored
    # simulate a kill mid-write of a third line
    with open(p, "a") as f:
        f.write('{"id": "c", "v"')
    with JsonlAppender(p) as out:
        assert out.done == {"a", "b"}
        out.write({"id": "c", "v": 3})
    lines = [json.loads(line) for line in p.read_text().splitlines()]
    assert [r["id"] for r in lines] == ["a", "b", "c"]
    assert lines[0]["v"] == 1
