"""``cowest run``: every stage of the method in order, skipping what is already done.

    sft -> (feedback -> align [-> validate]) x rounds -> eval

``validate`` (the alignment gain on held-out training questions) runs when ``align.validation_questions`` > 0.

A stage whose outputs exist for the same config is skipped; one made under another config is refused
unless ``overwrite`` (see :mod:`cowest.rundir`). Round r drafts with round r-1's aligned model.
"""

from __future__ import annotations

import time
from typing import Any

from cowest.config import RunConfig
from cowest.io import write_json
from cowest.rundir import RunDir


def run_all(cfg: RunConfig, *, overwrite: bool = False, show: bool = True) -> dict[str, Any]:
    from cowest.align.dpo import run_align
    from cowest.eval.evaluate import run_eval
    from cowest.feedback.collect import run_feedback
    from cowest.feedback.validate import run_validation
    from cowest.sft.train import run_sft

    rd = RunDir(cfg).create()
    # Wall seconds per stage over every invocation, saved as each stage ends: a run killed and resumed
    # (perhaps several times) reports what its stages took in all, not the last invocation's few seconds.
    timings_path = rd.root / "timings.json"
    timings: dict[str, float] = {} if overwrite else _read_timings(timings_path)

    def timed(name: str, fn: Any, *args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        _banner(name, show)
        try:
            return fn(*args, **kw)
        finally:  # a stage cut short (Ctrl-C, an error) still counts the time it ran
            timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t0, 1)
            write_json(timings_path, timings)
            release_memory()

    gated = ("routed", "random_gate")  # the gate + CoWest: they need the aligned model as cowest does
    needs_weak_training = any(s in cfg.eval.systems for s in ("weak", "superICL", "collab", "cowest", *gated))
    if needs_weak_training and cfg.weak.adapter is None:
        timed("sft", run_sft, cfg, overwrite=overwrite)
    stats, validation = {}, {}
    if any(s in cfg.eval.systems for s in ("cowest", *gated)):
        for r in range(1, cfg.rounds + 1):
            stats[f"round{r}"] = timed(f"feedback round {r}", run_feedback, cfg, r, overwrite=overwrite)
            timed(f"align round {r}", run_align, cfg, r, overwrite=overwrite)
            if cfg.align.validation_questions > 0:
                validation[f"round{r}"] = timed(f"validate round {r}", run_validation, cfg, r, overwrite=overwrite,
                                                show=show)
    summary = timed("eval", run_eval, cfg, overwrite=overwrite, show=show)
    summary["timings_s"] = timings
    summary["feedback"] = stats
    if validation:
        summary["validation"] = validation
    if show:
        print("stage wall times, all invocations (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    return summary


def _read_timings(path: Any) -> dict[str, float]:
    import json

    try:
        got = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in got.items()} if isinstance(got, dict) else {}


def release_memory() -> int:
    """Give the memory a finished stage freed back to the OS; returns the resident bytes released.

    glibc keeps freed heap pages mapped, so without this the process carries the last stage's peak (SFT's
    activations) into the next one, beside the strong server that stage starts. ``malloc_trim(0)`` also returns
    free pages from the middle of the heap (glibc >= 2.8). Elsewhere only the garbage collector runs."""
    import ctypes
    import ctypes.util
    import gc

    before = _rss_bytes()
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = getattr(libc, "malloc_trim", None)
    except OSError:
        trim = None
    if trim is not None:
        trim(0)
    return max(0, before - _rss_bytes())


def _rss_bytes() -> int:
    import os

    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _banner(name: str, show: bool) -> None:
    if show:
        from rich.console import Console

        Console().rule(f"[bold]{name}")
