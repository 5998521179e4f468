"""``cowest run``: every stage of the method in order, skipping what is already done.

    sft -> (feedback -> align) x rounds -> eval

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
    from cowest.sft.train import run_sft

    rd = RunDir(cfg).create()
    timings: dict[str, float] = {}

    def timed(name: str, fn: Any, *args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        _banner(name, show)
        out = fn(*args, **kw)
        timings[name] = round(time.perf_counter() - t0, 1)
        return out

    needs_weak_training = any(s in cfg.eval.systems for s in ("weak", "superICL", "collab", "cowest"))
    if needs_weak_training and cfg.weak.adapter is None:
        timed("sft", run_sft, cfg, overwrite=overwrite)
    stats = {}
    if "cowest" in cfg.eval.systems:
        for r in range(1, cfg.rounds + 1):
            stats[f"round{r}"] = timed(f"feedback round {r}", run_feedback, cfg, r, overwrite=overwrite)
            timed(f"align round {r}", run_align, cfg, r, overwrite=overwrite)
    summary = timed("eval", run_eval, cfg, overwrite=overwrite, show=show)
    write_json(rd.root / "timings.json", timings)
    summary["timings_s"] = timings
    summary["feedback"] = stats
    if show:
        print("stage wall times (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    return summary


def _banner(name: str, show: bool) -> None:
    if show:
        from rich.console import Console

        Console().rule(f"[bold]{name}")
