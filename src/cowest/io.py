"""JSON Lines input and output.

Reading: every problem names ``file:line``. A UTF-8 byte-order mark and blank lines are tolerated
(editors add both); anything else that is not one JSON object per line is an error.

Writing: :class:`JsonlAppender` appends one finished item per line and flushes it, so a run that is
killed keeps what it finished. On reopening, a torn last line (the kill hit mid-write) is cut off and
the keys already present are returned, so a stage can skip them and never pay twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cowest.errors import DataError


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; raise DataError naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [obj for _, obj in iter_jsonl(path)]


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename) so a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _tmp_name(path: Path) -> Path:
    # Per-process name: several ranks under `accelerate launch` may write the same file at once.
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


class JsonlAppender:
    """Append-only JSONL log of finished items, keyed by ``key_field``.

    >>> with JsonlAppender(p, key_field="id") as out:      # doctest: +SKIP
    ...     for ex in examples:
    ...         if ex.id in out.done: continue
    ...         out.write({"id": ex.id, ...})
    """

    def __init__(self, path: str | Path, key_field: str = "id"):
        self.path = Path(path)
        self.key_field = key_field
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self._repair_and_load()
        self.done: set[str] = {str(r[key_field]) for r in self.rows if key_field in r}
        self._f = open(self.path, "a", encoding="utf-8")

    def _repair_and_load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        keep = raw
        if raw and not raw.endswith(b"\n"):  # torn write: drop the partial last line
            keep = raw[: raw.rfind(b"\n") + 1]
        lines = keep.decode("utf-8", errors="replace").splitlines(keepends=True)
        good: list[str] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                break  # anything after a corrupt line is not trusted
            self.rows.append(obj)
            good.append(line)
        text = "".join(good)
        if text.encode("utf-8") != raw:
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)

    def write(self, row: dict[str, Any]) -> None:
        key = str(row[self.key_field])
        if key in self.done:
            return
        self._f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        self._f.flush()
        self.done.add(key)
        self.rows.append(row)

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
