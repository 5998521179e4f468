"""Secrets: a planted API key, passed only through the environment variable that ``strong.api_key_env``
names, must reach the endpoint (the server requires it) and appear nowhere else: not in any file under
the run directory (SQLite cache and its WAL, usage.json, config.yaml, predictions, records, stats, logs)
and not in the command's stdout/stderr. A wrong key gives a 401 whose message does not echo it.
"""

from __future__ import annotations

import secrets

import pytest

from support.faults import RecordingServer, cowest_env, grep_tree, run_cowest

from .conftest import N_EVAL, eval_args, feedback_args, report, with_sft_model

ENV = "COWEST_TEST_KEY"


def _planted() -> str:
    return "sk-planted-" + secrets.token_hex(16)


def _needles(key: str) -> list[str]:
    # The whole key, and its random part alone (a key printed partly scrubbed still leaks that).
    return [key, key.removeprefix("sk-planted-")]


def _with_key_env(args: list[str]) -> list[str]:
    return [f"strong.api_key_env={ENV}" if a == "strong.api_key_env=null" else a for a in args]


def _assert_nowhere(key: str, root, *texts: str) -> None:
    for needle in _needles(key):
        assert grep_tree(root, needle) == [], f"planted key found in {grep_tree(root, needle)}"
        for text in texts:
            assert needle not in text, "planted key printed by the command"


@pytest.mark.slow
def test_planted_key_reaches_the_server_and_nothing_else(tmp_path, tiny):
    key = _planted()
    env = cowest_env({ENV: key})
    run_dir = with_sft_model(tmp_path / "secret", tiny)
    with RecordingServer(api_key=key) as srv:
        fb = run_cowest(_with_key_env(feedback_args(tmp_path, "secret", tiny, srv.base_url)), env=env, timeout_s=240)
        assert fb.returncode == 0, fb.stderr[-3000:]
        ev = run_cowest(_with_key_env(eval_args(tmp_path, "secret", tiny, srv.base_url)), env=env, timeout_s=240)
        assert ev.returncode == 0, ev.stderr[-3000:]
        assert srv.outcomes["401"] == 0 and srv.outcomes["ok"] == len(srv.requested_hashes()) > 2 * N_EVAL
    files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()
                   and not p.relative_to(run_dir).as_posix().startswith("sft/"))
    for must in ("config.yaml", "usage.json", "strong_cache.sqlite", "feedback/round1/records.jsonl",
                 "eval/predictions/collab.jsonl"):
        assert must in files
    assert ENV in (run_dir / "config.yaml").read_text()  # the variable's name is kept, not its value
    _assert_nowhere(key, tmp_path, fb.stdout, fb.stderr, ev.stdout, ev.stderr)
    report("secrets", f"planted key searched in {len(files)} files under the run directory "
           f"({', '.join(files)}) and in 4 captured streams: 0 hits")


@pytest.mark.parametrize("command", ["eval", pytest.param("feedback", marks=pytest.mark.slow)])
def test_wrong_key_401_does_not_echo_it(tmp_path, tiny, command):
    right, wrong = _planted(), _planted()
    if command == "feedback":
        with_sft_model(tmp_path / "wrong", tiny)
    with RecordingServer(api_key=right) as srv:  # its 401 message echoes the key it was given
        build = eval_args if command == "eval" else feedback_args
        args = _with_key_env(build(tmp_path, "wrong", tiny, srv.base_url, "strong.max_retries=1"))
        if command == "eval":
            args.append("eval.systems=[strong]")
        run = run_cowest(args, env=cowest_env({ENV: wrong}), timeout_s=240)
        assert srv.outcomes["401"] >= 1
        url = srv.base_url
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-3000:]
    lines = run.message_lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "401" in lines[0] and ENV in lines[0] and url in lines[0], lines[0]
    _assert_nowhere(wrong, tmp_path, run.stdout, run.stderr)
    _assert_nowhere(right, tmp_path, run.stdout, run.stderr)
    report(f"secrets_wrong_key_{command}", lines[0])
