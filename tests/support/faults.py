"""Helpers for pipeline-level reliability tests: a recording fault-injecting server and a cowest
subprocess runner that can SIGKILL the command at a chosen moment.

    with RecordingServer(plan={0: ["429"], 3: ["stall", "drop"]}, latency_s=0.05) as srv:
        srv.phase = "killed"
        run = run_cowest(["eval", ...], kill_when=lambda: srv.answered_count() >= 5)
        srv.phase = "resumed"
        run_cowest(["eval", ...])
        srv.repeated_answers()    # request hashes the server answered more than once

A *request* is identified by the sha256 of its JSON body (model, messages, temperature, max_tokens, ...;
nothing excluded). The client's ``sample_index`` is not sent over the wire, so two samples of one request
look alike here; the stages exercised by the tests send one sample per body (``feedback.z_samples=1``).

``plan`` assigns faults per *distinct* request, in the order each is first seen: ``plan[i]`` is the list
of fault kinds (see :mod:`cowest.testing.openai_server`) returned for the first ``len(plan[i])`` attempts
of the i-th distinct request; later attempts, and requests not in the plan, are answered normally. So a
faulted request is retried exactly as many times as it has faults, whatever the concurrency.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cowest.testing.openai_server import OpenAITestServer, Responder, default_responder

# The reason under which StrongClient's usage records a retry caused by each fault kind.
RETRY_REASON = {
    "429": "429", "500": "500", "502": "502", "503": "503", "408": "408", "409": "409",
    "stall": "timeout", "drop": "connect", "truncated": "bad_body", "empty_choices": "bad_body", "html": "bad_body",
}

Plan = Mapping[int, Sequence[str]] | Callable[[int, int, dict[str, Any]], str] | None


def request_hash(body: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a chat request body (every field)."""
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


@dataclasses.dataclass
class Arrival:
    phase: str
    seq: int  # arrival number over the server's lifetime
    hash: str
    distinct_index: int  # order in which this request was first seen
    attempt: int  # 0 for its first arrival (in any phase)
    kind: str  # the fault (or "ok") the server applied


class RecordingServer(OpenAITestServer):
    """An :class:`OpenAITestServer` that records every chat request (hash, phase, fault) and every answer
    it produced, and injects faults per distinct request (see the module docstring).

    ``phase`` is a free label the test sets between runs ("killed", "resumed"): the records carry it."""

    def __init__(self, responder: Responder | None = None, *, plan: Plan = None, **kw: Any):
        if "faults" in kw:
            raise TypeError("RecordingServer takes plan=..., not faults=...")
        self._inner = responder or default_responder
        self.plan = plan
        self.phase = "run"
        self.log: list[Arrival] = []  # every chat request, in arrival order
        self.answers: list[tuple[str, str]] = []  # (phase, hash) each time a normal answer was produced
        self.answer_times: list[float] = []  # time.monotonic() of each answer (before it is sent)
        self._rec_lock = threading.Lock()
        self._first: dict[str, int] = {}
        self._tries: collections.Counter[str] = collections.Counter()
        self._local = threading.local()
        super().__init__(self._respond, faults=self._fault_for, **kw)

    def start(self) -> str:
        url = super().start()
        httpd = self._httpd
        default = httpd.handle_error

        def handle_error(request: Any, client_address: Any) -> None:  # a killed client is expected here
            if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                default(request, client_address)

        httpd.handle_error = handle_error  # type: ignore[method-assign]
        return url

    # -- hooks called by the handler threads -------------------------------------------------------
    def _fault_for(self, seq: int, body: dict[str, Any]) -> str:
        h = request_hash(body)
        with self._rec_lock:
            idx = self._first.setdefault(h, len(self._first))
            attempt = self._tries[h]
            self._tries[h] += 1
        kind = "ok"
        if callable(self.plan):
            kind = str(self.plan(idx, attempt, body))
        elif self.plan is not None:
            kinds = list(self.plan.get(idx, ()))
            if attempt < len(kinds):
                kind = kinds[attempt]
        with self._rec_lock:
            self.log.append(Arrival(self.phase, seq, h, idx, attempt, kind))
        self._local.kind, self._local.hash = kind, h
        return kind

    def _respond(self, messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
        text = self._inner(messages, body)
        if getattr(self._local, "kind", "ok") == "ok":  # stall/truncated/empty_choices also build an answer
            with self._rec_lock:
                self.answers.append((self.phase, request_hash(body)))
                self.answer_times.append(time.monotonic())
        return text

    # -- reading ------------------------------------------------------------------------------------
    def answered_count(self, phase: str | None = None) -> int:
        """Normal answers produced (in ``phase``, or in all phases)."""
        with self._rec_lock:
            return sum(1 for p, _ in self.answers if phase is None or p == phase)

    def answers_between(self, t0: float, t1: float = float("inf")) -> list[tuple[str, str]]:
        """(phase, hash) of the answers produced in [t0, t1) (monotonic clock)."""
        with self._rec_lock:
            return [a for a, t in zip(self.answers, self.answer_times) if t0 <= t < t1]

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Wait until no request is being handled (e.g. the killed client's in-flight ones have ended)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with self._lock:
                if self.in_flight == 0:
                    return True
            time.sleep(0.01)
        return False

    def answered_hashes(self, phase: str | None = None) -> collections.Counter[str]:
        with self._rec_lock:
            return collections.Counter(h for p, h in self.answers if phase is None or p == phase)

    def requested_hashes(self, phase: str | None = None) -> set[str]:
        with self._rec_lock:
            return {a.hash for a in self.log if phase is None or a.phase == phase}

    def repeated_answers(self) -> dict[str, list[str]]:
        """hash -> the phases it was answered in, for every request answered more than once."""
        with self._rec_lock:
            by_hash: dict[str, list[str]] = collections.defaultdict(list)
            for p, h in self.answers:
                by_hash[h].append(p)
        return {h: ps for h, ps in by_hash.items() if len(ps) > 1}

    def injected(
        self, phase: str | None = None, where: Callable[[Arrival], bool] | None = None
    ) -> collections.Counter[str]:
        """Faults applied, by kind (``"ok"`` arrivals excluded)."""
        with self._rec_lock:
            return collections.Counter(
                a.kind for a in self.log
                if a.kind != "ok" and (phase is None or a.phase == phase) and (where is None or where(a))
            )

    def hashes_where(self, pred: Callable[[dict[str, Any]], bool]) -> set[str]:
        """Hashes of the requests whose body satisfies ``pred`` (e.g. a collab prompt with a draft)."""
        with self._lock:
            bodies = list(self.bodies)
        return {request_hash(b) for b in bodies if pred(b)}


def expected_retries(kinds: Mapping[str, int] | Iterable[str]) -> dict[str, int]:
    """The retries-by-reason a client should record for these injected faults (each retried once)."""
    out: collections.Counter[str] = collections.Counter()
    for kind, n in collections.Counter(kinds).items():
        out[RETRY_REASON[kind]] += n
    return dict(sorted(out.items()))


# -- running the CLI -------------------------------------------------------------------------------


@dataclasses.dataclass
class CowestRun:
    args: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    killed: bool  # SIGKILLed by kill_when (not exited on its own)
    wall_s: float
    killed_at: float | None = None  # time.monotonic() when SIGKILL was sent

    @property
    def message_lines(self) -> list[str]:
        """stderr lines that are not progress-bar refreshes."""
        return message_lines(self.stderr)


_PROGRESS = re.compile(r"\d+%\|.*\|\s*\d+/\d+|\|\s*\d+/\d+ \[|^\s*\d+/\d+ \[")


def message_lines(stderr: str) -> list[str]:
    """Non-blank stderr lines with tqdm progress-bar refreshes (``\\r``-separated) removed."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not _PROGRESS.search(ln)]


def cowest_env(extra: Mapping[str, str] | None = None, drop: Iterable[str] = ("OPENAI_API_KEY",)) -> dict[str, str]:
    """The environment for a cowest subprocess: offline hub, no inherited API key, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in set(drop) and k != "COWEST_DEBUG"}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def run_cowest(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    kill_when: Callable[[], bool] | None = None,
    timeout_s: float = 300.0,
    poll_s: float = 0.002,
) -> CowestRun:
    """Run ``python -m cowest *args``; with ``kill_when``, SIGKILL it as soon as that returns True.

    Output goes through temporary files (no pipe can fill up and stall the child). On ``timeout_s`` the
    child is killed and ``subprocess.TimeoutExpired`` raised."""
    cmd = [sys.executable, "-m", "cowest", *args]
    with tempfile.TemporaryFile("w+b") as out, tempfile.TemporaryFile("w+b") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=dict(env) if env is not None else cowest_env(),
                                cwd=cwd, start_new_session=True)
        killed = False
        killed_at = None
        try:
            while proc.poll() is None:
                if kill_when is not None and kill_when():
                    os.kill(proc.pid, signal.SIGKILL)
                    killed, killed_at = True, time.monotonic()
                    proc.wait()
                    break
                if time.monotonic() - t0 > timeout_s:
                    proc.kill()
                    proc.wait()
                    raise subprocess.TimeoutExpired(cmd, timeout_s)
                time.sleep(poll_s)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        wall = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        return CowestRun(list(args), proc.returncode, out.read().decode("utf-8", "replace"),
                         err.read().decode("utf-8", "replace"), killed, wall, killed_at)


# -- checking outputs ------------------------------------------------------------------------------


@dataclasses.dataclass
class JsonlCheck:
    ids: list[str]  # in file order, duplicates included
    bad_lines: list[int]  # 1-based numbers of lines that are not a JSON object
    torn_tail: bool  # the file does not end with a newline

    @property
    def duplicates(self) -> list[str]:
        return sorted(k for k, n in collections.Counter(self.ids).items() if n > 1)


def check_jsonl(path: str | Path, key: str = "id") -> JsonlCheck:
    """Every line of ``path`` parsed strictly (no tolerance): ids, malformed lines, a torn last line."""
    raw = Path(path).read_bytes() if Path(path).exists() else b""
    ids: list[str] = []
    bad: list[int] = []
    for n, line in enumerate(raw.decode("utf-8", "replace").split("\n"), start=1):
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            bad.append(n)
            continue
        if not isinstance(obj, dict) or key not in obj:
            bad.append(n)
            continue
        ids.append(str(obj[key]))
    return JsonlCheck(ids, bad, bool(raw) and not raw.endswith(b"\n"))


def grep_tree(root: str | Path, needle: str | bytes) -> list[Path]:
    """Files under ``root`` (any type, binary included) whose bytes contain ``needle``."""
    pat = needle.encode() if isinstance(needle, str) else needle
    hits = []
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and not p.is_symlink():
            try:
                if pat in p.read_bytes():
                    hits.append(p)
            except OSError:
                continue
    return hits


def format_table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[str(c) for c in head]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(cells[0]), sep] + [fmt(r) for r in cells[1:]])
