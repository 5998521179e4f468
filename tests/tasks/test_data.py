import json
import sys
import types

import pytest

from cowest.errors import DataError
from cowest.tasks.data import available_splits, load_rows, read_rows, split_file


def test_split_file_dir_and_alias(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"a": 1}\n')
    (tmp_path / "validation.json").write_text("[]")
    assert split_file(tmp_path, "train") == tmp_path / "train.jsonl"
    assert split_file(tmp_path, "dev") == tmp_path / "validation.json"  # hub naming accepted
    assert available_splits(tmp_path) == ["train", "validation"]


def test_missing_split_lists_existing(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"a": 1}\n')
    (tmp_path / "dev.json").write_text("[]")
    with pytest.raises(DataError, match=r"no file for split 'test'.*splits here: dev, train"):
        split_file(tmp_path, "test")


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        split_file(tmp_path / "nope", "dev")


def test_single_file_serves_every_split(tmp_path):
    f = tmp_path / "all.jsonl"
    f.write_text('{"a": 1}\n')
    assert split_file(f, "train") == f == split_file(f, "dev")


def test_read_rows_jsonl_locations(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"a": 1}\n\n{"a": 2}\n')
    rows = read_rows(f)
    assert [r.index for r in rows] == [0, 1]
    assert rows[1].where == f"{f}:3"  # blank line skipped, line numbers kept


def test_read_rows_json_array_locations(tmp_path):
    f = tmp_path / "x.json"
    f.write_text(json.dumps([{"a": 1}, {"a": 2}]))
    assert read_rows(f)[1].where == f"{f}: item 1"
    f.write_text(json.dumps([{"a": 1}, 3]))
    with pytest.raises(DataError, match="item 1 is a int"):
        read_rows(f)
    f.write_text("{oops")
    with pytest.raises(DataError, match=r"x.json:1: not valid JSON"):
        read_rows(f)


def test_row_field_checks(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"s": "x", "n": true, "l": ["a", 1], "e": []}\n')
    row = read_rows(f)[0]
    assert row.get("s", str) == "x"
    with pytest.raises(DataError, match=r"x.jsonl:1: missing field 'q'"):
        row.get("q", str)
    assert row.get("q", str, required=False) is None
    with pytest.raises(DataError, match=r"x.jsonl:1: field 'n' must be int, got bool"):
        row.get("n", int)
    with pytest.raises(DataError, match="list of strings"):
        row.str_list("l")
    with pytest.raises(DataError, match="empty list"):
        row.str_list("e")
    assert row.str_list("s", allow_str=True) == ["x"]


def test_no_hub_copy():
    with pytest.raises(DataError, match="no Hugging Face hub copy; set task.data"):
        load_rows(None, "dev", task="mine", hub_name=None)


def test_hub_rows_via_datasets(monkeypatch):
    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        if split == "test":
            raise ValueError("Unknown split 'test'.\nmore detail")
        return [{"context": "hi", "safety_label": "__casual__"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_load_dataset))
    rows = load_rows(None, "dev", task="t", hub_name="org/ds", hub_splits={"dev": "validation"})
    assert calls == [("org/ds", "validation")]
    assert rows[0].where == "org/ds[validation] row 0" and rows[0].data["context"] == "hi"
    with pytest.raises(DataError, match=r"could not load org/ds split 'test' .*Unknown split 'test'\.\); set task.data"):
        load_rows(None, "test", task="t", hub_name="org/ds")
