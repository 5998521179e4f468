"""Shared helpers for the benchmark programs (not part of the cowest package; not run in CI)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the project root
OUT = ROOT / "bench" / "out"


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def machine() -> dict[str, Any]:
    """What ran the benchmark: CPU model, cores, memory, library versions, git commit."""
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"model name\s*:\s*(.+)", text)
        info["cpu"] = m.group(1).strip() if m else platform.processor()
        flags = re.search(r"flags\s*:\s*(.+)", text)
        fl = set(flags.group(1).split()) if flags else set()
        info["cpu_flags"] = sorted(f for f in fl if f in {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"})
    except OSError:
        info["cpu"] = platform.processor()
    info["cores"] = os.cpu_count()
    try:
        import psutil

        info["mem_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    for mod in ("torch", "transformers", "trl", "peft", "llama_cpp"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional
            pass
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                            text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.split("\n")
        info["uncommitted_files"] = [line[3:] for line in dirty if line.strip()]
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def machine_line(m: dict[str, Any]) -> str:
    return (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores ({', '.join(m.get('cpu_flags', []))}), "
            f"{m.get('mem_gb', '?')} GB RAM; torch {m.get('torch', '?')} ({m.get('torch_threads', '?')} threads), "
            f"transformers {m.get('transformers', '?')}, trl {m.get('trl', '?')}, llama-cpp-python {m.get('llama_cpp', '?')}; "
            f"commit {m.get('git_commit', '?')}")


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


class RSSPoller:
    """Polls a process (and its children, e.g. the llama.cpp server) for resident memory.

    ``mark(label)`` starts attributing peaks to ``label``; ``peaks`` maps label -> {main, children, total} MB."""

    def __init__(self, pid: int, interval_s: float = 0.1):
        import psutil

        self.proc = psutil.Process(pid)
        self.interval_s = interval_s
        self.label = "start"
        self.peaks: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def mark(self, label: str) -> None:
        self.label = label

    def _sample(self) -> None:
        import psutil

        try:
            main = self.proc.memory_info().rss
            kids = 0
            for c in self.proc.children(recursive=True):
                try:
                    kids += c.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            return
        p = self.peaks.setdefault(self.label, {"main_mb": 0.0, "children_mb": 0.0, "total_mb": 0.0})
        p["main_mb"] = max(p["main_mb"], main / 2**20)
        p["children_mb"] = max(p["children_mb"], kids / 2**20)
        p["total_mb"] = max(p["total_mb"], (main + kids) / 2**20)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "RSSPoller":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def cowest_cmd() -> list[str]:
    """The cowest CLI of this interpreter's environment."""
    exe = Path(sys.executable).with_name("cowest")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cowest"]


def run_logged(cmd: list[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path = ROOT) -> tuple[int, float]:
    """Run ``cmd`` with stdout+stderr to ``log``; (exit code, wall seconds)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env).returncode
    return rc, time.perf_counter() - t0


def quiet_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TQDM_MININTERVAL", "5")
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env
