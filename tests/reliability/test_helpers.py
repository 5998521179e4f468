"""The reliability helpers themselves (fast): the recording server's plan and bookkeeping, the subprocess
runner's SIGKILL, and the output checkers."""

from __future__ import annotations

from cowest.config import StrongConfig
from cowest.models.strong import ChatRequest, StrongClient
from support.faults import (
    RecordingServer, check_jsonl, expected_retries, grep_tree, message_lines, request_hash, run_cowest,
)

from .conftest import eval_args


def test_plan_faults_each_distinct_request_then_answers(tmp_path):
    reqs = [ChatRequest(messages=[{"role": "user", "content": f"q{i}"}]) for i in range(4)]
    with RecordingServer(plan={0: ["429", "drop"], 2: ["truncated"]}, retry_after=0.01) as srv:
        cfg = StrongConfig(base_url=srv.base_url, api_key_env=None, timeout_s=5, backoff_base_s=0.01,
                           backoff_max_s=0.02, max_concurrency=1)
        with StrongClient(cfg, cache_path=tmp_path / "c.sqlite", progress=False) as client:
            client.chat_batch(reqs, tag="t")
            assert client.usage.retries("t") == expected_retries(srv.injected()) == {"429": 1, "bad_body": 1, "connect": 1}
        assert srv.injected() == {"429": 1, "drop": 1, "truncated": 1}
        assert srv.answered_count() == srv.outcomes["ok"] == 4 and srv.repeated_answers() == {}
        assert len(srv.requested_hashes()) == 4 and srv.requests_total == 7
        assert [a.attempt for a in srv.log if a.distinct_index == 0] == [0, 1, 2]


def test_request_hash_covers_every_field():
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0.0, "max_tokens": 8}
    assert request_hash(body) == request_hash(dict(reversed(body.items())))
    assert request_hash(body) != request_hash({**body, "max_tokens": 9})


def test_run_cowest_sigkills_at_the_chosen_moment(tmp_path, tiny):
    with RecordingServer(latency_s=0.2) as srv:
        args = eval_args(tmp_path, "k", tiny, srv.base_url, "eval.systems=[strong]", "strong.max_concurrency=1")
        run = run_cowest(args, kill_when=lambda: srv.outcomes["ok"] >= 2, timeout_s=120)
        assert run.killed and run.returncode == -9 and run.killed_at is not None
        assert srv.wait_idle()
        assert 2 <= srv.answered_count() <= 3  # the one that triggered the kill, maybe one more in flight
    chk = check_jsonl(tmp_path / "k" / "eval" / "predictions" / "strong.jsonl")
    assert chk.bad_lines == [] and len(chk.ids) <= 2


def test_checkers(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"id": 1}\n{"id": 1}\nnot json\n{"id": 2')
    chk = check_jsonl(p)
    assert chk.ids == ["1", "1"] and chk.duplicates == ["1"] and chk.bad_lines == [3, 4] and chk.torn_tail
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "blob.bin").write_bytes(b"\x00\x01sk-secret\x02")
    assert grep_tree(tmp_path, "sk-secret") == [tmp_path / "sub" / "blob.bin"]
    stderr = ("strong: strong:   0%|          | 0/3 [00:00<?, ?req/s]\rstrong: strong:  33%|###  | 1/3 [00:00<00:01]\n"
              "error: strong model at http://127.0.0.1:1/v1 failed\n")
    assert message_lines(stderr) == ["error: strong model at http://127.0.0.1:1/v1 failed"]
