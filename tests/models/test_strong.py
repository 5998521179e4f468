"""StrongClient against a real local HTTP server: retries per fault, Retry-After, concurrency, cache,
error messages and key hygiene. Timeouts and backoffs are scaled down so the file runs in seconds."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import replace

import pytest

from cowest.config import StrongConfig
from cowest.errors import StrongAPIError
from cowest.models.strong import ChatRequest, ChatResult, StrongClient, parse_retry_after
from cowest.models.usage import Usage
from cowest.testing.openai_server import OpenAITestServer, default_responder, http_date

FAST = dict(timeout_s=0.5, backoff_base_s=0.01, backoff_max_s=0.05, max_retries=3, api_key_env=None)


def _cfg(srv: OpenAITestServer, **over) -> StrongConfig:
    return StrongConfig(base_url=srv.base_url, model="m", **{**FAST, **over})


def _reqs(n: int, prefix: str = "q") -> list[ChatRequest]:
    return [ChatRequest(messages=[{"role": "user", "content": f"{prefix} {i}"}]) for i in range(n)]


def _expected(req: ChatRequest) -> str:
    return default_responder(req.messages, {})


# -- fault matrix --------------------------------------------------------------------------------

REASON = {"429": "429", "500": "500", "502": "502", "503": "503", "408": "408", "409": "409",
          "stall": "timeout", "drop": "connect", "truncated": "bad_body", "empty_choices": "bad_body",
          "html": "bad_body"}


@pytest.mark.parametrize("fault", sorted(REASON))
def test_each_fault_is_retried_once(tmp_path, fault):
    reqs = _reqs(4)
    with OpenAITestServer(faults=[fault], stall_s=2) as srv, \
            StrongClient(_cfg(srv), cache_path=tmp_path / "c.sqlite", progress=False) as client:
        results = client.chat_batch(reqs, tag="t")
        assert [r.text for r in results] == [_expected(q) for q in reqs]
        assert client.usage.retries("t") == {REASON[fault]: 1}
        assert srv.requests_total == 5  # 4 answers + the one failed attempt
        assert srv.outcomes["ok"] == 4


def test_all_faults_in_one_schedule(tmp_path):
    faults = ["ok", "429", "500", "502", "503", "stall", "drop", "truncated", "empty_choices", "html"]
    reqs = _reqs(10)
    with OpenAITestServer(faults=faults, stall_s=2) as srv, \
            StrongClient(_cfg(srv, max_retries=12, max_concurrency=4), cache_path=tmp_path / "c.sqlite",
                         progress=False) as client:
        results = client.chat_batch(reqs, tag="mix")
        assert [r.text for r in results] == [_expected(q) for q in reqs]
        row = client.usage.by_tag()["mix"]
        assert row["retries"] == 9  # every injected fault, nothing else
        assert row["retries_by_reason"] == {"429": 1, "500": 1, "502": 1, "503": 1, "timeout": 1,
                                            "connect": 1, "bad_body": 3}
        assert row["calls"] == 10 and row["cached"] == 0


# -- Retry-After -----------------------------------------------------------------------------------

def _gap(srv: OpenAITestServer) -> float:
    return srv.arrivals[1] - srv.arrivals[0]


def test_retry_after_seconds_is_honoured(tmp_path):
    with OpenAITestServer(faults=["429"], retry_after=1) as srv, \
            StrongClient(_cfg(srv, backoff_max_s=5), progress=False) as client:
        client.chat_batch(_reqs(1), tag="t")
        assert 0.95 <= _gap(srv) < 2.0  # without the header the backoff would be <= 0.01 s


def test_retry_after_http_date_is_honoured():
    with OpenAITestServer(faults=["429"], retry_after=http_date(2)) as srv, \
            StrongClient(_cfg(srv, backoff_max_s=5), progress=False) as client:
        client.chat_batch(_reqs(1), tag="t")
        assert 0.9 <= _gap(srv) < 3.0  # HTTP-dates have 1 s resolution


def test_retry_after_is_capped_by_backoff_max():
    with OpenAITestServer(faults=["429"], retry_after=60) as srv, \
            StrongClient(_cfg(srv, backoff_max_s=0.2), progress=False) as client:
        client.chat_batch(_reqs(1), tag="t")
        assert _gap(srv) < 1.0


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 3 <= parse_retry_after(http_date(5)) <= 5
    assert parse_retry_after(http_date(-100)) == 0.0


# -- failures --------------------------------------------------------------------------------------

@pytest.mark.parametrize("status", ["400", "404", "422"])
def test_client_errors_are_not_retried(status):
    with OpenAITestServer(faults=[status]) as srv, StrongClient(_cfg(srv), progress=False) as client:
        with pytest.raises(StrongAPIError) as ei:
            client.chat_batch(_reqs(1), tag="t")
        assert srv.requests_total == 1
        assert ei.value.status == int(status)
        assert f"injected fault {status}" in str(ei.value) and srv.base_url in str(ei.value)
        assert client.usage.retries("t") == {}


def test_unauthorized_names_the_env_var(monkeypatch):
    monkeypatch.delenv("COWEST_TEST_KEY", raising=False)
    with OpenAITestServer(api_key="sk-required") as srv, \
            StrongClient(_cfg(srv, api_key_env="COWEST_TEST_KEY"), progress=False) as client:
        with pytest.raises(StrongAPIError) as ei:
            client.chat_batch(_reqs(1), tag="t")
        assert srv.requests_total == 1 and ei.value.status == 401
        assert "COWEST_TEST_KEY is not set" in str(ei.value)


def test_retries_exhausted_keeps_finished_work(tmp_path):
    cache = tmp_path / "c.sqlite"
    reqs = _reqs(6)
    seen: list[int] = []
    # the first three requests succeed, then the endpoint is down for good
    with OpenAITestServer(faults=lambda n, body: "ok" if n < 3 else "503") as srv:
        cfg = _cfg(srv, max_retries=2, max_concurrency=1)
        with StrongClient(cfg, cache_path=cache, progress=False) as client:
            with pytest.raises(StrongAPIError) as ei:
                client.chat_batch(reqs, tag="t", on_result=lambda i, r: seen.append(i))
        msg = str(ei.value)
        assert srv.base_url in msg and "3 attempt(s)" in msg and "HTTP 503" in msg
        assert ei.value.endpoint == srv.base_url and ei.value.status == 503
        assert sorted(seen) == [0, 1, 2]
        assert client.usage.retries("t")["503"] >= 2

        srv.set_faults(None)  # the endpoint recovers: only the unfinished work is sent again
        before = srv.requests_total
        with StrongClient(cfg, cache_path=cache, progress=False) as client:
            results = client.chat_batch(reqs, tag="t")
        assert [r.cached for r in results] == [True] * 3 + [False] * 3
        assert srv.requests_total - before == 3
        assert [r.text for r in results] == [_expected(q) for q in reqs]


def test_connection_refused_is_retried_then_reported():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens here
    cfg = StrongConfig(base_url=f"http://127.0.0.1:{port}/v1", **{**FAST, "max_retries": 2})
    with StrongClient(cfg, progress=False) as client:
        with pytest.raises(StrongAPIError) as ei:
            client.chat_batch(_reqs(1), tag="t")
        assert client.usage.retries("t") == {"connect": 2}
        assert f"127.0.0.1:{port}" in str(ei.value) and "connection failed" in str(ei.value)


def test_html_endpoint_gives_a_clear_error():
    with OpenAITestServer(faults=["html"] * 5) as srv, \
            StrongClient(_cfg(srv, max_retries=1), progress=False) as client:
        with pytest.raises(StrongAPIError, match="answered HTML.*base_url"):
            client.chat_batch(_reqs(1), tag="t")


# -- concurrency, order, callbacks -----------------------------------------------------------------

def test_concurrency_bound_is_respected():
    with OpenAITestServer(latency_s=0.15) as srv, \
            StrongClient(_cfg(srv, max_concurrency=3, timeout_s=5), progress=False) as client:
        t = time.monotonic()
        client.chat_batch(_reqs(12), tag="t")
        elapsed = time.monotonic() - t
        assert srv.max_in_flight == 3
        assert elapsed >= 4 * 0.15 * 0.9  # 12 requests, 3 at a time


def test_results_in_request_order_callbacks_in_completion_order():
    n = 6

    def slow_first(messages, body):  # request i sleeps (n - i) * 40 ms: finishes in reverse order
        i = int(messages[-1]["content"].split()[-1])
        time.sleep((n - i) * 0.04)
        return f"r{i}"

    seen: list[int] = []
    with OpenAITestServer(responder=slow_first) as srv, \
            StrongClient(_cfg(srv, max_concurrency=n, timeout_s=5), progress=False) as client:
        results = client.chat_batch(_reqs(n), tag="t", on_result=lambda i, r: seen.append(i))
    assert [r.text for r in results] == [f"r{i}" for i in range(n)]
    assert sorted(seen) == list(range(n)) and seen != list(range(n))
    assert seen[0] == n - 1


def test_repeated_sync_calls_and_call_from_running_loop():
    with OpenAITestServer() as srv, StrongClient(_cfg(srv, cache=False), progress=False) as client:
        for k in range(3):
            assert len(client.chat_batch(_reqs(2, f"round{k}"), tag="t")) == 2

        async def inside_loop():
            return client.chat_batch(_reqs(2, "async"), tag="t")

        assert [r.text for r in asyncio.run(inside_loop())] == [_expected(q) for q in _reqs(2, "async")]
        assert srv.requests_total == 8


def test_achat_and_async_context(tmp_path):
    async def main(base_url):
        cfg = replace(StrongConfig(**FAST), base_url=base_url, model="m", max_concurrency=2)
        async with StrongClient(cfg, cache_path=tmp_path / "c.sqlite", progress=False) as client:
            res = await asyncio.gather(*(client.achat(q, tag="a") for q in _reqs(5)))
            again = await client.achat(_reqs(1)[0], tag="a")
            return res, again, client.usage.by_tag()["a"]

    with OpenAITestServer(latency_s=0.05) as srv:
        res, again, row = asyncio.run(main(srv.base_url))
        assert [r.text for r in res] == [_expected(q) for q in _reqs(5)]
        assert again.cached and srv.requests_total == 5
        assert srv.max_in_flight <= 2
        assert row["calls"] == 6 and row["cached"] == 1


# -- cache and usage -------------------------------------------------------------------------------

def test_cache_hits_make_no_requests_and_cost_nothing(tmp_path):
    reqs = _reqs(5)
    usage = Usage()
    with OpenAITestServer() as srv:
        cfg = _cfg(srv, price_prompt_per_1k=1.0, price_completion_per_1k=2.0)
        with StrongClient(cfg, cache_path=tmp_path / "c.sqlite", usage=usage, progress=False) as client:
            first = client.chat_batch(reqs, tag="first")
            second = client.chat_batch(reqs, tag="second")
        assert srv.requests_total == 5
    assert not any(r.cached for r in first) and all(r.cached for r in second)
    assert [r.text for r in first] == [r.text for r in second]
    rows = usage.by_tag()
    assert rows["second"] == {"calls": 5, "cached": 5, "prompt_tokens": 0, "completion_tokens": 0,
                              "cost_usd": 0.0, "retries": 0, "retries_by_reason": {}}
    f = rows["first"]
    assert f["prompt_tokens"] == 10 and f["completion_tokens"] == sum(len(r.text.split()) for r in first)
    assert f["cost_usd"] == pytest.approx((f["prompt_tokens"] * 1.0 + f["completion_tokens"] * 2.0) / 1000)


def test_sample_index_makes_distinct_entries(tmp_path):
    msgs = [{"role": "user", "content": "same question"}]
    reqs = [ChatRequest(messages=msgs, sample_index=k, temperature=0.7) for k in range(3)]
    with OpenAITestServer() as srv:
        with StrongClient(_cfg(srv), cache_path=tmp_path / "c.sqlite", progress=False) as client:
            client.chat_batch(reqs, tag="t")
            assert srv.requests_total == 3 and len(client.cache) == 3
            client.chat_batch(reqs, tag="t")
            assert srv.requests_total == 3
        assert all(b["temperature"] == 0.7 for b in srv.bodies)


def test_cache_is_shared_across_endpoints(tmp_path):
    # the key ignores base_url: the same question to the same model at a new address is a hit
    with OpenAITestServer() as a:
        with StrongClient(_cfg(a), cache_path=tmp_path / "c.sqlite", progress=False) as client:
            client.chat_batch(_reqs(2), tag="t")
    with OpenAITestServer() as b:
        with StrongClient(_cfg(b), cache_path=tmp_path / "c.sqlite", progress=False) as client:
            assert all(r.cached for r in client.chat_batch(_reqs(2), tag="t"))
        assert b.requests_total == 0


def test_planted_key_never_leaks(tmp_path, monkeypatch):
    key = "sk-planted-3f9c1e7a5b2d4c6e8f0a"
    monkeypatch.setenv("COWEST_TEST_KEY", key)
    usage = Usage()
    with OpenAITestServer(api_key=key, faults=["429", "500"]) as srv:
        cfg = _cfg(srv, api_key_env="COWEST_TEST_KEY")
        with StrongClient(cfg, cache_path=tmp_path / "c.sqlite", usage=usage, progress=False) as client:
            assert len(client.chat_batch(_reqs(3), tag="t")) == 3  # the key was sent and accepted
            assert key not in repr(client)
        # a server that echoes the wrong key back in its 401 message
        srv.api_key = "sk-something-else-entirely"
        with StrongClient(cfg, cache_path=tmp_path / "c.sqlite", usage=usage, progress=False) as client:
            with pytest.raises(StrongAPIError) as ei:
                client.chat_batch(_reqs(1, "new"), tag="t")
        assert "Incorrect API key" in str(ei.value)
        assert key not in str(ei.value) and key not in repr(ei.value)
    usage.save(tmp_path / "usage.json")
    assert key not in json.dumps(usage.to_dict())
    for f in tmp_path.iterdir():  # the cache db, its WAL, the usage JSON
        assert key.encode() not in f.read_bytes(), f.name


def test_result_types():
    with OpenAITestServer() as srv, StrongClient(_cfg(srv, cache=False), progress=False) as client:
        (r,) = client.chat_batch(_reqs(1), tag="t")
        assert isinstance(r, ChatResult) and r.prompt_tokens == 2 and not r.cached
        assert client.chat_batch([], tag="t") == []


def test_one_tag_per_request_and_the_order_given():
    """A batch that mixes systems: each call counts under its own tag; one slot sends in the order given."""
    seen: list[str] = []

    def record(messages, body):
        seen.append(messages[-1]["content"])
        return "ok"

    reqs = _reqs(4)
    with OpenAITestServer(responder=record) as srv, \
            StrongClient(_cfg(srv, max_concurrency=1), progress=False) as client:
        client.chat_batch(reqs, tag=["a", "b", "a", "a"])
        with pytest.raises(ValueError, match="3 tags for 4 requests"):
            client.chat_batch(reqs, tag=["a", "b", "a"])
    assert seen == [r.messages[-1]["content"] for r in reqs]
    by_tag = client.usage.by_tag()
    assert (by_tag["a"]["calls"], by_tag["b"]["calls"]) == (3, 1)
