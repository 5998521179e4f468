"""Reading a task's raw rows from a local directory, a single file, or the Hugging Face hub.

Every row carries ``where`` (``file:line`` for JSON Lines, ``file: item i`` for a JSON array,
``hub-name[split] row i`` for the hub) so that a bad row is reported where a user can find it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cowest.errors import DataError
from cowest.io import iter_jsonl

SPLIT_SUFFIXES = (".jsonl", ".json")
# Hub datasets call the dev split "validation"; local copies call it "dev".
SPLIT_ALIASES = {"dev": ("validation", "val"), "validation": ("dev", "val"), "val": ("dev", "validation")}


@dataclass
class Row:
    index: int  # 0-based position in the split
    where: str  # human-readable location for error messages
    data: dict[str, Any]

    def get(self, name: str, types: type | tuple[type, ...], *, required: bool = True) -> Any:
        """Field ``name`` checked against ``types`` (None allowed when not required)."""
        if name not in self.data or self.data[name] is None:
            if required:
                raise DataError(f"{self.where}: missing field {name!r}")
            return None
        value = self.data[name]
        types_t = types if isinstance(types, tuple) else (types,)
        # bool is an int subclass; a JSON true is never a valid number here.
        if not isinstance(value, types_t) or (isinstance(value, bool) and bool not in types_t):
            want = " or ".join(t.__name__ for t in types_t)
            raise DataError(f"{self.where}: field {name!r} must be {want}, got {type(value).__name__} {value!r}"[:300])
        return value

    def str_list(self, name: str, *, required: bool = True, allow_str: bool = False) -> list[str] | None:
        """A list of strings (or a lone string when ``allow_str``); never empty when required."""
        value = self.get(name, (list, str) if allow_str else list, required=required)
        if value is None:
            return None
        if isinstance(value, str):
            return [value]
        if not all(isinstance(v, str) for v in value):
            raise DataError(f"{self.where}: field {name!r} must be a list of strings")
        if required and not value:
            raise DataError(f"{self.where}: field {name!r} is an empty list")
        return list(value)


def available_splits(directory: Path) -> list[str]:
    """Split names with a ``<split>.json`` or ``<split>.jsonl`` file in ``directory``."""
    return sorted({p.stem for p in directory.iterdir() if p.is_file() and p.suffix in SPLIT_SUFFIXES})


def split_file(data: str | Path, split: str) -> Path:
    """The file holding ``split``: ``data`` itself when it is a file, else ``data/<split>.json[l]``."""
    path = Path(data).expanduser()
    if path.is_file():
        return path  # a single file serves every split
    if not path.is_dir():
        raise DataError(f"{path}: no such file or directory (task.data)")
    for name in (split, *SPLIT_ALIASES.get(split, ())):
        for suffix in SPLIT_SUFFIXES:
            candidate = path / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    found = available_splits(path)
    raise DataError(
        f"{path}: no file for split {split!r} (looked for {split}.jsonl, {split}.json); "
        f"splits here: {', '.join(found) if found else 'none'}"
    )


def read_rows(path: str | Path) -> list[Row]:
    """All rows of a ``.jsonl`` file (with line numbers) or a ``.json`` array (with item indices)."""
    path = Path(path)
    if path.suffix == ".json":
        return _read_json_array(path)
    return [Row(i, f"{path}:{lineno}", obj) for i, (lineno, obj) in enumerate(iter_jsonl(path))]


def _read_json_array(path: Path) -> list[Row]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of objects, got {type(data).__name__}")
    rows = []
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise DataError(f"{path}: item {i} is a {type(obj).__name__}, expected an object")
        rows.append(Row(i, f"{path}: item {i}", obj))
    return rows


def hub_rows(name: str, split: str, hub_splits: dict[str, str] | None = None) -> list[Row]:
    """Rows of a hub dataset (``datasets.load_dataset``); ``hub_splits`` renames our split names."""
    hub_split = (hub_splits or {}).get(split, split)
    try:
        from datasets import load_dataset
    except ImportError:  # pragma: no cover - datasets is a core dependency
        raise DataError(f"loading {name} from the hub needs the `datasets` package; or set task.data") from None
    try:
        ds = load_dataset(name, split=hub_split)
    except Exception as e:  # network, unknown split, ...: one line the user can act on
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(
            f"could not load {name} split {hub_split!r} from the Hugging Face hub ({first}); "
            "set task.data to a local copy"
        ) from None
    return [Row(i, f"{name}[{hub_split}] row {i}", dict(obj)) for i, obj in enumerate(ds)]


def load_rows(
    data: str | Path | None,
    split: str,
    *,
    task: str,
    hub_name: str | None,
    hub_splits: dict[str, str] | None = None,
) -> list[Row]:
    """Rows of ``split`` from ``data`` (dir or file) or, when ``data`` is None, from the hub."""
    if data is not None:
        return read_rows(split_file(data, split))
    if hub_name is None:
        raise DataError(f"task {task!r} has no Hugging Face hub copy; set task.data to a local directory or file")
    return hub_rows(hub_name, split, hub_splits)
