"""Kill and resume: `cowest eval` / `cowest feedback` run as subprocesses against a local server (in this
process, ~80/50 ms per answer), SIGKILLed once the server has answered N requests, then run again with
the same command. Compared with an uninterrupted reference run:

- the final predictions/records hold exactly the reference ids, every line valid JSON, no duplicates;
- eval: the same content as the reference (same drafts, same strong answers), and the killed + resumed
  runs asked the server for exactly the reference's set of requests;
- feedback: every question has the reference's strong-alone (z) outputs, and the killed + resumed runs
  asked for exactly the reference's z requests. The weak *drafts* may differ from the reference's for the
  chunk the kill hit: the killed run drafted it in its own process, and sampling with the bf16 weak model
  is not bit-reproducible from run to run on some CPUs (oneDNN/AMX kernels, seen on a Sapphire Rapids
  Xeon), so the same seed can give another draft there. The resumed run reuses the killed run's journaled
  drafts (drafts.jsonl) instead of redrafting, so what must hold is: every strong+draft request the server
  received, in either phase, is for a draft that the final records use (nothing was paid for a draft
  that was then thrown away), every draft the records use was asked for, and a record whose drafts
  equal the reference's has the reference's strong+draft outputs and Δ. (A client killed between
  sending a request's headers and its body leaves a truncated body; the test server ignores it, and these
  checks also leave out any body without messages);
- the server never answered one request twice, except a request answered after (or at) the kill, which
  the dead client could not keep ("answered but lost", counted and reported; at most the in-flight bound).

    pytest -s -m slow tests/reliability/test_kill_resume.py
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from cowest.training import last_checkpoint
from support.faults import RecordingServer, check_jsonl, format_table, run_cowest

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
    content: dict[str, dict[str, object]]  # file -> id -> what to compare after resume
    hashes: set[str]  # distinct requests the uninterrupted run made
    answers: int
    draft_free: set[str]  # those of them that carry no weak draft (eval: `strong`; feedback: z)


_COLLAB = re.compile(r"Question:\n(.*?)\n\n<draft>\n(.*)\n</draft>\Z", re.S)


def question_and_draft(body: dict) -> tuple[str, str] | None:
    """(question, draft) of a strong+draft request body; None for a request without a draft."""
    m = _COLLAB.search(str(body["messages"][-1]["content"])) if _is_chat(body) else None
    return None if m is None else (m.group(1), m.group(2))


def _is_chat(body: dict) -> bool:
    # A client killed while sending leaves a truncated body: not a request of the stage.
    return bool(body.get("messages"))


def _draft_free(body: dict) -> bool:
    return _is_chat(body) and question_and_draft(body) is None


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
        return Reference(content, srv.requested_hashes(), srv.answered_count(),
                         srv.hashes_where(_draft_free))


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
        if command == "eval":
            assert _eval_content(run_dir) == ref.content, "resumed outputs differ from the uninterrupted run"
            assert srv.requested_hashes() == ref.hashes, \
                "killed + resumed runs asked for other requests than the reference"
        else:
            _check_feedback(run_dir, srv, ref)

        # Requests: none answered twice but what the kill cut off.
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


def _check_feedback(run_dir: Path, srv: RecordingServer, ref: Reference) -> None:
    """What the resumed feedback records and the server's log must satisfy (see the module docstring)."""
    path = run_dir / "feedback" / "round1" / "records.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for r in records:
        drafts, collab_outputs, z_outputs, deltas = ref.content["records"][r["id"]]
        assert r["z_outputs"] == z_outputs, f"{r['id']}: strong-alone outputs differ from the reference"
        if r["drafts"] == drafts:  # drafted alike (always so, where the weak model is reproducible)
            assert (r["collab_outputs"], r["deltas"]) == (collab_outputs, deltas), \
                f"{r['id']}: drafted like the reference, but other strong+draft outputs or Δ"
    used = {(r["question"].strip(), d.strip()) for r in records for d in r["drafts"]}
    wasted = srv.hashes_where(lambda b: (qd := question_and_draft(b)) is not None and qd not in used)
    assert not wasted, f"{len(wasted)} strong+draft requests were paid for drafts the records do not use"
    asked = {qd for b in list(srv.bodies) if (qd := question_and_draft(b)) is not None}
    assert asked == used, "a draft in the records was never sent to the strong model"
    assert srv.hashes_where(_draft_free) == ref.draft_free, \
        "killed + resumed runs asked for other strong-alone requests than the reference"


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


def test_sft_sigkilled_mid_training_resumes_from_its_checkpoint(tmp_path, tiny):
    """`cowest sft` SIGKILLed once a checkpoint is on disk: the rerun resumes from it and finishes the steps."""
    args = ["sft", "task.name=demo", "task.n_train=8", "task.format=direct", f"output_dir={tmp_path}", "name=k",
            f"weak.model={tiny}", "weak.dtype=float32", "sft.max_steps=10", "sft.batch_size=2",
            "sft.max_length=512", "sft.lora_r=2", "sft.lora_alpha=4", "sft.logging_steps=1"]
    trainer = tmp_path / "k" / "sft" / "trainer"
    # killed once a checkpoint is complete (a kill mid-save is the unit test of last_checkpoint)
    killed = run_cowest(args, kill_when=lambda: last_checkpoint(trainer) is not None, timeout_s=300)
    assert killed.killed and killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "k" / "sft" / ".done.json").exists()
    resumed = run_cowest(args, timeout_s=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "sft: resuming from the checkpoint at step" in resumed.stdout + resumed.stderr
    metrics = json.loads((tmp_path / "k" / "sft" / "metrics.json").read_text())
    assert metrics["resumed_from"].startswith("checkpoint-") and metrics["global_step"] == 10
    assert (tmp_path / "k" / "sft" / "adapter" / "adapter_model.safetensors").exists() and not trainer.exists()
