"""Fault matrix, end to end: the real `cowest eval` / `cowest feedback` commands (subprocesses) against a
local OpenAI-protocol server that injects every fault kind, some several times in a row on one request.

Checked: the run completes with every item (no duplicates), the retries recorded in usage.json equal the
faults the server injected (by kind -> usage reason, per tag), and the server's successful answers equal
the number of distinct requests (no request paid twice). The matrix is printed (``pytest -s``).

    pytest -s -m slow tests/reliability/test_fault_matrix.py
"""

from __future__ import annotations

import json

import pytest

from support.faults import (
    RETRY_REASON, RecordingServer, check_jsonl, expected_retries, format_table, run_cowest,
)

from .conftest import N_EVAL, demo_ids, eval_args, feedback_args, report, with_sft_model

pytestmark = pytest.mark.slow

# Small backoffs; a timeout short enough that a stall costs little, long enough that a loaded CI box
# never times out a normal answer (that would be a real, uninjected retry and fail the count).
FAST = ["strong.timeout_s=3", "strong.max_retries=5", "strong.backoff_base_s=0.01", "strong.backoff_max_s=0.1",
        "strong.max_concurrency=4"]
RETRY_AFTER_S = 0.05
STALL_S = 8.0
KINDS = ("429", "500", "502", "503", "stall", "drop", "truncated", "empty_choices", "html")

# Per distinct request (in first-arrival order): the faults its first attempts get.
# eval: requests 0-11 are the `strong` system, 12-23 `collab` (the runner finishes one system first).
EVAL_PLAN = {
    0: ["429"], 1: ["500"], 2: ["502"], 3: ["503"], 4: ["stall"], 5: ["drop"], 6: ["truncated"],
    7: ["empty_choices"], 8: ["html"], 9: ["429", "503", "drop"],
    12: ["429"], 13: ["500"], 14: ["502"], 15: ["503"], 16: ["stall"], 17: ["drop"], 18: ["truncated"],
    19: ["empty_choices"], 20: ["html"], 21: ["stall", "truncated", "500"],
}
# feedback (6 questions, K=2): requests 0-5 are the strong model alone (z), then up to 12 strong+draft.
FEEDBACK_PLAN = {
    0: ["429"], 1: ["stall"], 2: ["drop", "502"], 3: ["truncated"], 4: ["html"],
    6: ["500"], 7: ["503"], 8: ["empty_choices"], 9: ["html", "429"], 10: ["stall"], 11: ["drop"],
}


def _is_collab(body) -> bool:
    return "<draft>" in body["messages"][-1]["content"]


def _matrix(srv: RecordingServer, usage_stage: dict, expected_ids: list[str], found_ids: list[str]) -> tuple[str, dict]:
    """One row per fault kind: injected, usage reason, retries recorded, items lost, duplicate paid calls."""
    answered = srv.answered_hashes()
    recorded = usage_stage["total"]["retries_by_reason"]
    lost_ids = sorted(set(expected_ids) - set(found_ids))
    rows, figures = [], {}
    for kind in KINDS:
        arrivals = [a for a in srv.log if a.kind == kind]
        hashes = {a.hash for a in arrivals}
        reason = RETRY_REASON[kind]
        sharing = [k for k in KINDS if RETRY_REASON[k] == reason]
        seen = recorded.get(reason, 0)
        seen_txt = f"{seen}" if len(sharing) == 1 else f"{seen} (shared by {'+'.join(sharing)})"
        lost = sum(1 for h in hashes if answered[h] == 0)
        dup = sum(1 for h in hashes if answered[h] > 1)
        rows.append((kind, len(arrivals), reason, seen_txt, lost, dup))
        figures[kind] = {"injected": len(arrivals), "reason": reason, "retries": seen, "lost": lost, "dup": dup}
    total_dup = sum(1 for n in answered.values() if n > 1)
    rows.append(("**all**", sum(f["injected"] for f in figures.values()), "", sum(recorded.values()),
                 f"{len(lost_ids)} items", total_dup))
    head = ("fault kind", "injected", "usage reason", "retries recorded", "items lost", "duplicate paid calls")
    return format_table(head, rows), figures


def _assert_no_loss_no_double_pay(srv: RecordingServer, usage_stage: dict) -> None:
    distinct = srv.requested_hashes()
    assert srv.repeated_answers() == {}, "a request was answered (paid) more than once"
    assert srv.outcomes["ok"] == len(distinct) == srv.answered_count()
    assert set(srv.answered_hashes()) == distinct, "some request never got an answer"
    paid = usage_stage["total"]["calls"] - usage_stage["total"]["cached"]
    assert paid == len(distinct)


def test_eval_fault_matrix(tmp_path, tiny):
    with RecordingServer(plan=EVAL_PLAN, retry_after=RETRY_AFTER_S, stall_s=STALL_S) as srv:
        run = run_cowest(eval_args(tmp_path, "faults", tiny, srv.base_url, *FAST), timeout_s=240)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "Traceback" not in run.stderr

        preds = tmp_path / "faults" / "eval" / "predictions"
        ids = demo_ids("dev", N_EVAL)
        for system in ("strong", "collab"):
            chk = check_jsonl(preds / f"{system}.jsonl")
            assert chk.bad_lines == [] and not chk.torn_tail
            assert chk.duplicates == []
            assert sorted(chk.ids) == sorted(ids), f"{system}: items lost or extra"

        usage = json.loads((tmp_path / "faults" / "usage.json").read_text())["stages"]["eval"]
        injected = srv.injected()
        assert sorted(injected) == sorted(KINDS), f"not every fault kind was injected: {injected}"
        assert sum(injected.values()) == sum(len(v) for v in EVAL_PLAN.values())
        assert usage["total"]["retries_by_reason"] == expected_retries(injected)
        collab = srv.hashes_where(_is_collab)
        for tag, where in (("strong", lambda a: a.hash not in collab), ("collab", lambda a: a.hash in collab)):
            assert usage["tags"][tag]["retries_by_reason"] == expected_retries(srv.injected(where=where)), tag
        _assert_no_loss_no_double_pay(srv, usage)
        assert len(srv.requested_hashes()) == 2 * N_EVAL

        found = [i for s in ("strong", "collab") for i in check_jsonl(preds / f"{s}.jsonl").ids]
        table, _ = _matrix(srv, usage, ids * 2, found)
        report("fault_matrix_eval", f"`cowest eval` (strong + collab, {N_EVAL} questions, {len(srv.requested_hashes())} "
               f"distinct requests, {srv.requests_total} HTTP requests, {run.wall_s:.1f} s)\n\n{table}")


def test_feedback_fault_matrix(tmp_path, tiny):
    with_sft_model(tmp_path / "fbfaults", tiny)
    with RecordingServer(plan=FEEDBACK_PLAN, retry_after=RETRY_AFTER_S, stall_s=STALL_S) as srv:
        run = run_cowest(feedback_args(tmp_path, "fbfaults", tiny, srv.base_url, *FAST), timeout_s=240)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "Traceback" not in run.stderr

        records = tmp_path / "fbfaults" / "feedback" / "round1" / "records.jsonl"
        ids = demo_ids("train", 6)
        chk = check_jsonl(records)
        assert chk.bad_lines == [] and not chk.torn_tail and chk.duplicates == []
        assert sorted(chk.ids) == sorted(ids)
        for line in records.read_text().splitlines():
            rec = json.loads(line)
            assert len(rec["collab_outputs"]) == 2 and all(rec["collab_outputs"]) and all(rec["z_outputs"])

        usage = json.loads((tmp_path / "fbfaults" / "usage.json").read_text())["stages"]["feedback_round1"]
        injected = srv.injected()
        assert sum(injected.values()) == sum(len(v) for v in FEEDBACK_PLAN.values())
        assert usage["total"]["retries_by_reason"] == expected_retries(injected)
        collab = srv.hashes_where(_is_collab)
        for tag, where in (("feedback_z", lambda a: a.hash not in collab),
                           ("feedback_collab", lambda a: a.hash in collab)):
            assert usage["tags"][tag]["retries_by_reason"] == expected_retries(srv.injected(where=where)), tag
        _assert_no_loss_no_double_pay(srv, usage)

        table, _ = _matrix(srv, usage, ids, chk.ids)
        report("fault_matrix_feedback", f"`cowest feedback` (6 questions, K=2, {len(srv.requested_hashes())} distinct "
               f"requests, {srv.requests_total} HTTP requests, {run.wall_s:.1f} s)\n\n{table}")
