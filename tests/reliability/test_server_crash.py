"""A managed strong server that crashes mid-stage: `cowest feedback` stops at once with one line naming the
crash (not seven connection retries), keeps the records finished before it, and resumes after a restart.

The crash is planted (tests/models/crashing_server.py kills itself with SIGILL on its N-th chat request), since
this machine's CPU cannot make the real llama.cpp build fault; the lifecycle code under test is the real one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cowest.cli.main import main
from cowest.models import local_server as llama_server

from .conftest import feedback_args, with_sft_model

pytestmark = pytest.mark.slow

CRASHING = str(Path(__file__).resolve().parents[1] / "models" / "crashing_server.py")
N_TRAIN = 18  # chunks of 16 + 2 questions; K=2: chunk 1 is 16 z + up to 32 strong+draft requests


def _plant(monkeypatch, *crash: str) -> None:
    """The managed server's child is the crashing server, crashing as ``crash`` says."""
    monkeypatch.setattr(llama_server, "check_llama_cpp", lambda: None)

    def command(self):
        return [sys.executable, CRASHING, "--port", str(self.port), "--signal", "SIGILL", *crash]

    monkeypatch.setattr(llama_server.LlamaServer, "command", command)
    monkeypatch.setattr(llama_server.LlamaBatchServer, "command", command)


@pytest.mark.parametrize("parallel, label, log_name", [(1, "llama.cpp server", "llama_server.log"),
                                                      (32, "llama.cpp batch server", "llama_batch_server.log")])
def test_feedback_stops_at_a_server_crash_and_keeps_its_records(tmp_path, tiny, monkeypatch, capsys, parallel, label,
                                                                 log_name):
    gguf = tmp_path / "strong.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 64)
    run = tmp_path / "crash"
    with_sft_model(run, tiny)
    args = feedback_args(tmp_path, "crash", tiny, "http://127.0.0.1:9/v1", n_train=N_TRAIN)
    args += [f"strong.local.gguf={gguf}", "strong.local.engine=llama.cpp", f"strong.local.parallel={parallel}",
             "strong.local.startup_timeout_s=60", "strong.backoff_base_s=5"]

    records = run / "feedback" / "round1" / "records.jsonl"
    _plant(monkeypatch, "--crash-once-nonempty", str(records))  # in chunk 2: chunk 1's 16 records are written
    with pytest.raises(SystemExit) as ei:
        main(args)
    assert ei.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    log = run / log_name
    assert err == [f"error: {label} for strong.gguf exited with SIGILL (illegal instruction): its llama.cpp "
                   f"build uses CPU instructions this machine cannot run; rebuild it with scripts/setup.sh "
                   f"(COWEST_REBUILD_LLAMA=1), or set strong.local.extra_bufts=off — see {log}"]
    assert len(records.read_text().splitlines()) == 16
    usage = json.loads((run / "usage.json").read_text())["stages"]["feedback_round1"]["total"]
    assert usage["retries"] == 0  # the crash was reported, not retried

    _plant(monkeypatch)  # a server that works: the same command resumes
    main(args)
    assert len(records.read_text().splitlines()) == N_TRAIN
