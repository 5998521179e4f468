"""Kill and resume: `cowest eval` / `cowest feedback` run as subprocesses against a local server (in this
process, ~80/50 ms per answer), SIGKILLed once the server has answered N requests, then run again with
the same command. Compared with an uninterrupted reference run:

- the final predictions/records hold exactly the reference ids, every line valid JSON, no duplicates,
  and the same content (same drafts, same strong answers);
- the killed + resumed runs asked the server for exactly the reference's set of requests, and the server
  never answered one request twice, except a request answered after (or at) the kill, which the dead
  client could not keep ("answered but lost", counted and reported; at most the in-flight bound).

    pytest -s -m slow tests/reliability/test_kill_resume.py
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cowest.testing.faults import RecordingServer, check_jsonl, format_table, run_cowest

from .conftest import N_EVAL, eval_args, feedback_args, report, with_sft_model

pytestmark = pytest.mark.slow

CONCURRENCY = 2
EVAL_EXTRA = [f"strong.max_concurrency={CONCURRENCY}", "strong.timeout_s=30"]
EVAL_LATENCY_S = 0.08
FB_N_TRAIN = 18  # two feedback chunks (16 + 2 questions): records are written per chunk
FB_EXTRA = [f"strong.max_concurrency={CONCURRENCY}", "strong.timeout_s=30"]
FB_LATENCY_S = 0.05
ROWS: list[tuple] = []  # report rows, printed after each test


@dataclasses.dataclass
class Reference:
    content: dict[str, dict[str, object]]  # file -> id -> what must be identical after resume
    hashes: set[str]  # distinct requests the uninterrupted run made
    answers: int


def _eval_content(run_dir: Path) -> dict[str, dict[str, object]]:
    out = {}
    for system in ("strong", "collab"):
        path = run_dir / "eval" / "predictions" / f"{system}.jsonl"
        out[system] = {r["id"]: (r.get("weak_draft"), r["strong_output"], r["prediction"])
                       for r in map(json.loads, path.read_text().splitlines())}
    return out


def _feedback_content(run_dir: Path) -> dict[str, dict[str, object]]:
    path = run_dir / "feedback" / "round1" / "records.jsonl"
    return {"records": {r["id"]: (r["drafts"], r["collab_outputs"], r["z_outputs"], r["deltas"])
                        for r in map(json.loads, path.read_text().splitlines())}}


def _files(run_dir: Path, command: str) -> dict[str, Path]:
    if command == "eval":
        return {s: run_dir / "eval" / "predictions" / f"{s}.jsonl" for s in ("strong", "collab")}
    return {"records": run_dir / "feedback" / "round1" / "records.jsonl"}


def _args(command: str, root: Path, name: str, tiny: Path, base_url: str) -> list[str]:
    if command == "eval":
        return eval_args(root, name, tiny, base_url, *EVAL_EXTRA)
    with_sft_model(root / name, tiny)
    return feedback_args(root, name, tiny, base_url, *FB_EXTRA, n_train=FB_N_TRAIN)


def _latency(command: str) -> float:
    return EVAL_LATENCY_S if command == "eval" else FB_LATENCY_S


def _reference(command: str, root: Path, tiny: Path) -> Reference:
    with RecordingServer(latency_s=_latency(command)) as srv:
        run = run_cowest(_args(command, root, "ref", tiny, srv.base_url), timeout_s=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert srv.repeated_answers() == {}
        content = _eval_content(root / "ref") if command == "eval" else _feedback_content(root / "ref")
        return Reference(content, srv.requested_hashes(), srv.answered_count())


@pytest.fixture(scope="module")
def eval_reference(tmp_path_factory, tiny) -> Reference:
    ref = _reference("eval", tmp_path_factory.mktemp("eval_ref"), tiny)
    assert all(len(v) == N_EVAL for v in ref.content.values())
    return ref


@pytest.fixture(scope="module")
def feedback_reference(tmp_path_factory, tiny) -> Reference:
    ref = _reference("feedback", tmp_path_factory.mktemp("fb_ref"), tiny)
    assert len(ref.content["records"]) == FB_N_TRAIN
    return ref


def _kill_and_resume(command: str, kill_at: int, ref: Reference, tmp_path: Path, tiny: Path) -> None:
    name = f"kr{kill_at}"
    run_dir = tmp_path / name
    with RecordingServer(latency_s=_latency(command)) as srv:
        args = _args(command, tmp_path, name, tiny, srv.base_url)

        srv.phase = "killed"
        killed = run_cowest(args, kill_when=lambda: srv.outcomes["ok"] >= kill_at, timeout_s=300)
        assert killed.killed, f"the run ended (rc={killed.returncode}) before {kill_at} answers: {killed.stderr[-2000:]}"
        assert srv.wait_idle(), "the killed run's in-flight requests never finished"
        answered_by_kill = len(srv.answers_between(0, killed.killed_at))
        answered_after_kill = len(srv.answers_between(killed.killed_at))
        on_disk = {k: check_jsonl(p) for k, p in _files(run_dir, command).items()}
        rows_after_kill = sum(len(c.ids) for c in on_disk.values())
        assert all(not c.duplicates for c in on_disk.values())

        srv.phase = "resumed"
        resumed = run_cowest(args, timeout_s=300)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "Traceback" not in resumed.stderr

        # Outputs: complete, valid, no duplicates, and the same as the uninterrupted run.
        for key, path in _files(run_dir, command).items():
            chk = check_jsonl(path)
            assert chk.bad_lines == [] and not chk.torn_tail, f"{path}: invalid lines {chk.bad_lines}"
            assert chk.duplicates == [], f"{path}: duplicate ids {chk.duplicates}"
            assert set(chk.ids) == set(ref.content[key]), f"{path}: ids differ from the reference run"
        content = _eval_content(run_dir) if command == "eval" else _feedback_content(run_dir)
        assert content == ref.content, "resumed outputs differ from the uninterrupted run"

        # Requests: the same set as the reference; none answered twice but what the kill cut off.
        assert srv.requested_hashes() == ref.hashes, "killed + resumed runs asked for other requests than the reference"
        repeated = srv.repeated_answers()
        assert all(phases == ["killed", "resumed"] for phases in repeated.values()), repeated
        cut_off = {h for p, h in srv.answers_between(killed.killed_at) if p == "killed"}
        lost = set(repeated) - cut_off  # answered to the live client, which died before it stored the answer
        assert len(repeated) <= CONCURRENCY, f"{len(repeated)} requests paid twice"

        stage = "eval" if command == "eval" else "feedback_round1"
        usage = json.loads((run_dir / "usage.json").read_text())["stages"][stage]["total"]
        ROWS.append((command, kill_at, answered_by_kill, answered_after_kill, rows_after_kill,
                     srv.answered_count("resumed"), usage["cached"], len(repeated), len(lost), len(set(repeated) & cut_off),
                     0, 0, f"{usage['calls'] - usage['cached']}/{srv.answered_count()}"))
        head = ("command", "kill after N answers", "answered before kill", "answered after kill",
                "rows on disk after kill", "paid calls on resume", "cache hits on resume", "requests paid twice",
                "answered but lost", "in flight at kill", "ids lost", "duplicate lines",
                "usage.json paid / server answered")
        report("kill_resume", format_table(head, ROWS))


@pytest.mark.parametrize("kill_at", [1, 5, 11, 17])
def test_eval_kill_and_resume(tmp_path, tiny, eval_reference, kill_at):
    # 1, 5, 11: during the `strong` system (12 requests); 17: during `collab`, after the weak drafts.
    _kill_and_resume("eval", kill_at, eval_reference, tmp_path, tiny)


@pytest.mark.parametrize("kill_at", [1, 5, 11, "chunk2"])
def test_feedback_kill_and_resume(tmp_path, tiny, feedback_reference, kill_at):
    # 1, 5, 11: in the first chunk of 16 questions (z, then strong+draft); chunk2: two answers before the
    # end, after the first chunk's 16 records were written.
    if kill_at == "chunk2":
        kill_at = feedback_reference.answers - 2
    _kill_and_resume("feedback", kill_at, feedback_reference, tmp_path, tiny)


def test_usage_json_counts_the_calls_a_killed_run_paid_for(tmp_path, tiny):
    with RecordingServer(latency_s=EVAL_LATENCY_S) as srv:
        args = eval_args(tmp_path, "usage", tiny, srv.base_url, *EVAL_EXTRA, "eval.systems=[strong]")
        killed = run_cowest(args, kill_when=lambda: srv.outcomes["ok"] >= 6, timeout_s=300)
        assert killed.killed and srv.wait_idle()
        resumed = run_cowest(args, timeout_s=300)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    usage = json.loads((tmp_path / "usage" / "usage.json").read_text())["stages"]["eval"]["total"]
    # Every answer the server produced was paid for; at most the in-flight ones can escape the client.
    assert usage["calls"] - usage["cached"] >= srv.answered_count() - CONCURRENCY
