"""SQLite cache of strong-model answers, keyed by what determines the answer (never by endpoint or key).

One WAL-mode database file, safe for many threads (one shared connection behind a lock) and many
processes (WAL + ``busy_timeout``). Every ``put`` is its own committed transaction, so a kill at any
moment loses at most the entry being written. A row that cannot be decoded is treated as a miss.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

_SCHEMA = "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"


def cache_key(
    *,
    model: str,
    messages: list[dict[str, Any]],
    temperature: float,
    max_tokens: int,
    sample_index: int = 0,
    top_p: float | None = None,
    stop: list[str] | str | None = None,
    logprobs: bool | None = None,
    top_logprobs: int | None = None,
) -> str:
    """sha256 of canonical JSON of the fields that determine an answer.

    ``top_p``/``stop``/``logprobs``/``top_logprobs`` enter only when set, so adding them later keeps old keys
    valid (and an answer cached without log-probs is never served to a request that needs them). The endpoint
    URL and credentials are deliberately absent: the same question to the same model is the same entry.
    """
    payload: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "temperature": float(temperature),
        "max_tokens": int(max_tokens),
        "sample_index": int(sample_index),
    }
    if top_p is not None:
        payload["top_p"] = float(top_p)
    if stop is not None:
        payload["stop"] = stop
    if logprobs:
        payload["logprobs"] = True
        payload["top_logprobs"] = int(top_logprobs or 0)
    canon = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def _valid(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("text"), str)
        and all(isinstance(value.get(k, 0), int) and not isinstance(value.get(k, 0), bool)
                for k in ("prompt_tokens", "completion_tokens"))
    )


class ResponseCache:
    """``get(key) -> dict | None`` and ``put(key, {"text", "prompt_tokens", "completion_tokens"[, "logprobs"]})``."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 30_000):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: autocommit, each statement its own transaction.
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
        )
        self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        self._wal(busy_timeout_ms / 1000)
        self._conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kills
        self._conn.execute(_SCHEMA)

    def _wal(self, timeout_s: float) -> None:
        """Switch to WAL. Two processes opening a new file at once can get "database is locked" here without the
        busy timeout applying (the switch takes an exclusive lock): retry within that timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._db().execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"cache {self.path} is closed")
        return self._conn

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db().execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except (TypeError, ValueError):
            return None
        return value if _valid(value) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        if not _valid(value):
            raise ValueError(f"not a cacheable result: {sorted(value)}")
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        with self._lock:
            self._db().execute(
                "INSERT OR REPLACE INTO responses (key, value, created) VALUES (?, ?, ?)", (key, text, time.time())
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"
