"""Usage accounting: per-tag counts, retries by reason, merge, table, JSON round trip."""

from __future__ import annotations

import threading

from cowest.models.usage import Usage


def _filled() -> Usage:
    u = Usage()
    u.record_call("collab", prompt_tokens=100, completion_tokens=20, cost_usd=0.5)
    u.record_call("collab", prompt_tokens=50, completion_tokens=10, cost_usd=0.25)
    u.record_call("collab", prompt_tokens=999, completion_tokens=999, cost_usd=9.0, cached=True)
    u.record_retry("collab", "429")
    u.record_retry("collab", "429")
    u.record_retry("collab", "timeout")
    u.record_call("strong", prompt_tokens=7, completion_tokens=3)
    return u


def test_by_tag_counts_and_cached_are_free():
    row = _filled().by_tag()["collab"]
    assert row["calls"] == 3 and row["cached"] == 1
    assert (row["prompt_tokens"], row["completion_tokens"]) == (150, 30)  # the cache hit added nothing
    assert row["cost_usd"] == 0.75
    assert row["retries"] == 3
    assert row["retries_by_reason"] == {"429": 2, "timeout": 1}


def test_total_and_retries():
    u = _filled()
    t = u.total()
    assert t["calls"] == 4 and t["prompt_tokens"] == 157 and t["retries"] == 3
    assert u.retries("collab") == {"429": 2, "timeout": 1}
    assert u.retries("strong") == {}
    assert u.retries() == {"429": 2, "timeout": 1}


def test_merge_adds():
    a, b = _filled(), _filled()
    b.record_retry("judge", "connect")
    a.merge(b)
    rows = a.by_tag()
    assert rows["collab"]["calls"] == 6
    assert rows["collab"]["retries_by_reason"] == {"429": 4, "timeout": 2}
    assert rows["judge"]["retries_by_reason"] == {"connect": 1}


def test_save_load_roundtrip(tmp_path):
    u = _filled()
    path = tmp_path / "usage.json"
    u.save(path)
    assert Usage.load(path).to_dict() == u.to_dict()


def test_table_has_rows_and_total():
    text = _filled().table()
    lines = text.splitlines()
    assert lines[0].split()[0] == "tag"
    assert any(line.startswith("collab") and "429:2" in line for line in lines)
    assert lines[-1].startswith("TOTAL")
    assert " 4 " in lines[-1]  # total calls


def test_thread_safe_counts():
    u = Usage()

    def work():
        for _ in range(1000):
            u.record_call("x", prompt_tokens=1)
            u.record_retry("x", "500")

    ts = [threading.Thread(target=work) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    row = u.by_tag()["x"]
    assert row["calls"] == 8000 and row["prompt_tokens"] == 8000 and row["retries"] == 8000


def test_save_by_stage_accumulates(tmp_path):
    path = tmp_path / "usage.json"
    _filled().save(path, stage="feedback")
    _filled().save(path, stage="feedback")  # a resumed stage adds its new counts
    _filled().save(path, stage="eval")
    assert Usage.load(path, stage="feedback").by_tag()["collab"]["calls"] == 6
    assert Usage.load(path, stage="eval").by_tag()["collab"]["calls"] == 3
    assert Usage.load(path, stage="sft").by_tag() == {}
    total = Usage.load(path)
    assert total.by_tag()["collab"]["calls"] == 9
    assert total.by_tag()["collab"]["retries_by_reason"] == {"429": 6, "timeout": 3}
