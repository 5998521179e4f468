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


def test_stage_times_add_up_over_a_killed_and_resumed_run(tmp_path, monkeypatch):
    """timings.json is saved as each stage ends, and a resumed run adds its invocation's time to the earlier one's."""
    import json
    import time

    from cowest.config import load_config
    from cowest.eval import evaluate
    from cowest.pipeline import run_all
    from cowest.sft import train

    def killed_eval(cfg, **kw):
        time.sleep(0.2)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "run_sft", lambda cfg, **kw: time.sleep(0.3))
    monkeypatch.setattr(evaluate, "run_eval", killed_eval)
    cfg = load_config(None, [f"output_dir={tmp_path}", "eval.systems=[strong,collab]"])
    with pytest.raises(KeyboardInterrupt):
        run_all(cfg, show=False)
    first = json.loads((cfg.run_dir / "timings.json").read_text())
    assert first["sft"] >= 0.3 and first["eval"] >= 0.2

    monkeypatch.setattr(train, "run_sft", lambda cfg, **kw: None)  # done: skipped in no time
    monkeypatch.setattr(evaluate, "run_eval", lambda cfg, **kw: time.sleep(0.2) or {"systems": {}})
    summary = run_all(cfg, show=False)
    assert summary["timings_s"]["sft"] == first["sft"]
    assert summary["timings_s"]["eval"] >= first["eval"] + 0.2
    assert json.loads((cfg.run_dir / "timings.json").read_text()) == summary["timings_s"]
    assert run_all(cfg, overwrite=True, show=False)["timings_s"]["eval"] < first["eval"] + 0.2  # redone: counted anew
