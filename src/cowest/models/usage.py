"""Strong-model accounting per tag (a system or pipeline stage): calls, cache hits, tokens, retries, cost.

Thread-safe; cache hits count as calls with zero tokens and zero cost. Retries are counted by reason:
an HTTP status code ("429", "503"), "timeout", "connect" (refused/dropped connection) or "bad_body"
(HTML, malformed or truncated JSON, empty ``choices``).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

_FIELDS = ("calls", "cached", "prompt_tokens", "completion_tokens", "cost_usd")


def _empty() -> dict[str, Any]:
    return {"calls": 0, "cached": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "retries": {}}


class Usage:
    """``record_call``/``record_retry`` while running; ``by_tag()``, ``table()``, ``save()`` after."""

    def __init__(self, tags: dict[str, dict[str, Any]] | None = None, *, journal: str | Path | None = None,
                 stage: str | None = None):
        self._lock = threading.Lock()
        self.tags: dict[str, dict[str, Any]] = {}
        for tag, row in (tags or {}).items():
            self._merge_row(tag, row)
        # Durable record of every call as it happens, so a killed run's paid calls are not lost.
        self.journal = Path(journal) if journal is not None else None
        self.stage = stage
        self._jf = None
        if self.journal is not None:
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            torn = self.journal.exists() and self.journal.stat().st_size > 0 and not self.journal.read_bytes().endswith(b"\n")
            self._jf = open(self.journal, "a", encoding="utf-8")
            if torn:  # a kill mid-line: end it so the next entry starts clean (the torn one is skipped)
                self._jf.write("\n")

    def _log(self, entry: dict[str, Any]) -> None:  # under self._lock
        if self._jf is not None and not self._jf.closed:
            self._jf.write(json.dumps({"stage": self.stage, **entry}) + "\n")
            self._jf.flush()

    @staticmethod
    def from_journal(path: str | Path) -> dict[str, "Usage"]:
        """Per stage, the counts in a journal (a torn last line is ignored)."""
        out: dict[str, Usage] = {}
        p = Path(path)
        if not p.exists():
            return out
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            u = out.setdefault(str(e.get("stage")), Usage())
            if "retry" in e:
                u.record_retry(e["tag"], e["retry"])
            else:
                u.record_call(e["tag"], prompt_tokens=e.get("prompt_tokens", 0),
                              completion_tokens=e.get("completion_tokens", 0), cost_usd=e.get("cost_usd", 0.0),
                              cached=e.get("cached", False))
        return out

    # -- recording -------------------------------------------------------------------------------
    def _row(self, tag: str) -> dict[str, Any]:
        return self.tags.setdefault(tag, _empty())

    def record_call(
        self, tag: str, *, prompt_tokens: int = 0, completion_tokens: int = 0, cost_usd: float = 0.0, cached: bool = False
    ) -> None:
        with self._lock:
            self._log({"tag": tag, "cached": cached, "prompt_tokens": int(prompt_tokens),
                       "completion_tokens": int(completion_tokens), "cost_usd": float(cost_usd)})
            row = self._row(tag)
            row["calls"] += 1
            if cached:
                row["cached"] += 1
                return
            row["prompt_tokens"] += int(prompt_tokens)
            row["completion_tokens"] += int(completion_tokens)
            row["cost_usd"] += float(cost_usd)

    def record_retry(self, tag: str, reason: str) -> None:
        with self._lock:
            self._log({"tag": tag, "retry": reason})
            retries = self._row(tag)["retries"]
            retries[reason] = retries.get(reason, 0) + 1

    # -- reading ---------------------------------------------------------------------------------
    def by_tag(self) -> dict[str, dict[str, Any]]:
        """Per tag: calls, cached, prompt_tokens, completion_tokens, retries (total), retries_by_reason, cost_usd."""
        with self._lock:
            out = {}
            for tag, row in self.tags.items():
                d = {k: row[k] for k in _FIELDS}
                d["retries"] = sum(row["retries"].values())
                d["retries_by_reason"] = dict(sorted(row["retries"].items()))
                out[tag] = d
            return out

    def total(self) -> dict[str, Any]:
        tot = _empty()
        tot["retries_by_reason"] = {}
        for row in self.by_tag().values():
            for k in _FIELDS:
                tot[k] += row[k]
            for r, n in row["retries_by_reason"].items():
                tot["retries_by_reason"][r] = tot["retries_by_reason"].get(r, 0) + n
        tot["retries"] = sum(tot["retries_by_reason"].values())
        return tot

    def retries(self, tag: str | None = None) -> dict[str, int]:
        """Retries by reason for one tag (or all tags)."""
        rows = self.by_tag()
        if tag is not None:
            return rows.get(tag, {}).get("retries_by_reason", {})
        return self.total()["retries_by_reason"]

    # -- combining and persistence ---------------------------------------------------------------
    def _merge_row(self, tag: str, row: dict[str, Any]) -> None:
        mine = self._row(tag)
        for k in _FIELDS:
            mine[k] += row.get(k, 0)
        src = row.get("retries_by_reason", row.get("retries", {}))
        if isinstance(src, dict):
            for r, n in src.items():
                mine["retries"][r] = mine["retries"].get(r, 0) + int(n)

    def merge(self, other: "Usage") -> "Usage":
        """Add ``other``'s counts into this one (returns self)."""
        rows = other.by_tag()
        with self._lock:
            for tag, row in rows.items():
                self._merge_row(tag, row)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"tags": self.by_tag(), "total": self.total()}

    def save(self, path: str | Path, *, stage: str | None = None) -> None:
        """Write JSON atomically. With ``stage``, add these counts to that stage's entry in an existing
        file (``{"stages": {stage: ...}, "tags": <sum over stages>, "total": ...}``): a run's stages share
        one usage.json and a resumed stage accumulates."""
        path = Path(path)
        data = self.to_dict()
        if stage is not None:
            old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            stages = {name: Usage(d.get("tags", {})) for name, d in (old.get("stages") or {}).items()}
            if old.get("tags") and not old.get("stages"):
                stages["unstaged"] = Usage(old["tags"])  # a flat file from before stages were used
            if self.journal is not None:  # the journal holds every run of this stage, killed ones included
                stages[stage] = Usage.from_journal(self.journal).get(stage, Usage())
            else:
                stages.setdefault(stage, Usage()).merge(self)
            total = Usage()
            for u in stages.values():
                total.merge(u)
            data = total.to_dict()
            data["stages"] = {name: u.to_dict() for name, u in sorted(stages.items())}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path, *, stage: str | None = None) -> "Usage":
        """The counts in a saved file: all stages summed, or one ``stage`` (empty if absent)."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if stage is not None:
            data = (data.get("stages") or {}).get(stage, {})
        return cls(data.get("tags", {}))

    def table(self) -> str:
        """A plain-text table, one row per tag plus a total."""
        head = ("tag", "calls", "cached", "prompt_tok", "compl_tok", "retries", "cost_usd")
        rows = [
            (tag, r["calls"], r["cached"], r["prompt_tokens"], r["completion_tokens"],
             _fmt_retries(r["retries_by_reason"]), f"{r['cost_usd']:.4f}")
            for tag, r in sorted(self.by_tag().items())
        ]
        t = self.total()
        rows.append(("TOTAL", t["calls"], t["cached"], t["prompt_tokens"], t["completion_tokens"],
                     _fmt_retries(t["retries_by_reason"]), f"{t['cost_usd']:.4f}"))
        cells = [head] + [tuple(str(c) for c in r) for r in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(lines)

    def __repr__(self) -> str:
        t = self.total()
        return f"Usage(tags={sorted(self.tags)}, calls={t['calls']}, cached={t['cached']}, retries={t['retries']})"


def _fmt_retries(by_reason: dict[str, int]) -> str:
    total = sum(by_reason.values())
    if not total:
        return "0"
    return f"{total} (" + ",".join(f"{r}:{n}" for r, n in sorted(by_reason.items())) + ")"
