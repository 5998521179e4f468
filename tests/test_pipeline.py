"""The pipeline's own helpers (the stages are tested in their folders, end to end in tests/reliability)."""

from __future__ import annotations

import ctypes.util
import sys

import pytest

from cowest.pipeline import _rss_bytes, release_memory


@pytest.mark.skipif(not sys.platform.startswith("linux") or not ctypes.util.find_library("c"),
                    reason="glibc's malloc_trim and /proc/self/statm are Linux's")
def test_release_memory_returns_freed_heap_pages_to_the_os():
    # 64 KB blocks live on the heap (below the mmap threshold); one kept block above them stops glibc from
    # trimming the heap top by itself, so the freed 190 MB stay resident until malloc_trim.
    blocks = [bytearray(64 * 1024) for _ in range(3000)]
    for b in blocks:
        b[::4096] = b"\x01" * len(b[::4096])  # touch every page
    keep = blocks[-1]
    del blocks[:-1]
    rss = _rss_bytes()
    released = release_memory()
    assert released > 100 * 2**20, f"released {released / 2**20:.0f} MB of {rss / 2**20:.0f} MB resident"
    assert len(keep) == 64 * 1024


@pytest.mark.parametrize("extra, expected", [
    ([], ["sft", "feedback1", "align1", "feedback2", "align2", "eval"]),
    (["eval.systems=[strong,collab]"], ["sft", "eval"]),
    (["eval.systems=[strong]"], ["eval"]),
    (["eval.systems=[weak,routed]"], ["sft", "feedback1", "align1", "feedback2", "align2", "eval"]),  # gate + CoWest
    (["weak.adapter=/some/adapter"], ["feedback1", "align1", "feedback2", "align2", "eval"]),
    (["align.validation_questions=16"], ["sft", "feedback1", "align1", "validate1", "feedback2", "align2",
                                         "validate2", "eval"]),
])
def test_run_all_runs_the_stages_the_systems_need(tmp_path, monkeypatch, extra, expected):
    from cowest.align import dpo
    from cowest.config import load_config
    from cowest.eval import evaluate
    from cowest.feedback import collect, validate
    from cowest.pipeline import run_all
    from cowest.sft import train

    ran = []
    monkeypatch.setattr(train, "run_sft", lambda cfg, **kw: ran.append("sft"))
    monkeypatch.setattr(collect, "run_feedback", lambda cfg, r, **kw: ran.append(f"feedback{r}") or {"round": r})
    monkeypatch.setattr(dpo, "run_align", lambda cfg, r, **kw: ran.append(f"align{r}"))
    monkeypatch.setattr(validate, "run_validation", lambda cfg, r, **kw: ran.append(f"validate{r}") or {"round": r})
    monkeypatch.setattr(evaluate, "run_eval", lambda cfg, **kw: ran.append("eval") or {"systems": {}})
    cfg = load_config(None, [f"output_dir={tmp_path}", "rounds=2", *extra])
    summary = run_all(cfg, show=False)
    assert ran == expected
    assert set(summary["timings_s"]) == {"sft" if s == "sft" else s.replace("feedback", "feedback round ")
                                         .replace("align", "align round ").replace("validate", "validate round ") for s in expected}
    assert (cfg.run_dir / "timings.json").exists()
