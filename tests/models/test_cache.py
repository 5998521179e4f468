"""ResponseCache: keys, corruption tolerance, and concurrent writers (threads and processes)."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import threading

from cowest.models.cache import ResponseCache, cache_key

MSGS = [{"role": "user", "content": "What is 2+2?"}]


def _key(**over):
    kw = dict(model="m", messages=MSGS, temperature=0.0, max_tokens=16, sample_index=0)
    kw.update(over)
    return cache_key(**kw)


def _val(i: int) -> dict:
    return {"text": f"answer {i}", "prompt_tokens": i, "completion_tokens": 2 * i}


def test_key_depends_on_answer_fields_only():
    base = _key()
    assert _key() == base  # deterministic
    assert _key(sample_index=1) != base
    assert _key(temperature=0.7) != base
    assert _key(max_tokens=17) != base
    assert _key(model="other") != base
    assert _key(messages=[{"role": "user", "content": "What is 2+3?"}]) != base
    assert _key(top_p=0.9) != base
    assert _key(stop=["\n"]) != base
    # dict order of a message does not matter (canonical JSON)
    assert _key(messages=[{"content": "What is 2+2?", "role": "user"}]) == base
    # the signature has no place for endpoint or credentials at all
    import inspect

    params = set(inspect.signature(cache_key).parameters)
    assert not params & {"base_url", "api_key", "endpoint", "headers"}


def test_roundtrip_and_persistence(tmp_path):
    path = tmp_path / "c.sqlite"
    with ResponseCache(path) as c:
        assert c.get("k") is None
        c.put("k", _val(3))
        assert c.get("k") == _val(3)
        assert len(c) == 1
    with ResponseCache(path) as c:  # survives reopening
        assert c.get("k") == _val(3)
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode.lower() == "wal"


def test_corrupt_rows_are_misses(tmp_path):
    path = tmp_path / "c.sqlite"
    with ResponseCache(path) as c:
        c.put("good", _val(1))
    db = sqlite3.connect(path)
    rows = [
        ("badjson", "{not json"),
        ("list", "[1, 2]"),
        ("notext", '{"prompt_tokens": 1}'),
        ("badtok", '{"text": "x", "prompt_tokens": "many"}'),
    ]
    db.executemany("INSERT INTO responses (key, value, created) VALUES (?, ?, 0)", rows)
    db.commit()
    db.close()
    with ResponseCache(path) as c:
        for key, _ in rows:
            assert c.get(key) is None, key
        assert c.get("good") == _val(1)
        c.put("badjson", _val(9))  # a miss can be overwritten by a fresh answer
        assert c.get("badjson") == _val(9)


def test_concurrent_thread_writers(tmp_path):
    path = tmp_path / "c.sqlite"
    errors: list[BaseException] = []
    with ResponseCache(path) as c:

        def work(t: int) -> None:
            try:
                for i in range(100):
                    c.put(f"t{t}-{i}", _val(i))
                    assert c.get(f"t{t}-{i}") == _val(i)
            except BaseException as e:  # noqa: BLE001 - surfaced by the assert below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors
        assert len(c) == 800


def _proc_writer(path: str, proc: int, n: int) -> None:
    c = ResponseCache(path)
    for i in range(n):
        c.put(f"p{proc}-{i}", _val(i))
        c.put("shared", _val(proc))  # both processes fight over one row too
    c.close()


def test_concurrent_process_writers(tmp_path):
    path = str(tmp_path / "c.sqlite")
    ctx = mp.get_context("spawn")  # no fork of a threaded pytest process
    procs = [ctx.Process(target=_proc_writer, args=(path, p, 150)) for p in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    with ResponseCache(path) as c:
        assert len(c) == 301
        assert all(c.get(f"p{p}-{i}") == _val(i) for p in range(2) for i in range(150))
        assert c.get("shared") in (_val(0), _val(1))
