"""The local OpenAI-compatible test server: routes, auth, usage, counters and each injected fault."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cowest.testing.openai_server import OpenAITestServer, default_responder, http_date

CHAT = {"model": "m", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 8}
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _post(base: str, body=CHAT, **kw) -> httpx.Response:
    return httpx.post(base + "/chat/completions", json=body, timeout=5, trust_env=False, **kw)


def test_ok_answer_models_and_usage():
    with OpenAITestServer(model="strongish") as srv:
        assert srv.base_url.startswith("http://127.0.0.1:")
        r = _post(srv.base_url)
        assert r.status_code == 200
        data = r.json()
        text = data["choices"][0]["message"]["content"]
        assert text == default_responder(CHAT["messages"], CHAT)
        assert text.endswith("Answer: A")
        assert data["usage"]["prompt_tokens"] == 3
        assert data["usage"]["completion_tokens"] == len(text.split())
        models = httpx.get(srv.base_url + "/models", trust_env=False).json()
        assert models["data"][0]["id"] == "strongish"
        assert srv.requests_total == 1 and srv.outcomes == {"ok": 1}
        assert srv.bodies[0]["max_tokens"] == 8


def test_responder_is_pluggable_and_deterministic_default():
    a = default_responder([{"role": "user", "content": "x"}], {})
    assert a == default_responder([{"role": "user", "content": "x"}], {})
    assert a != default_responder([{"role": "user", "content": "y"}], {})
    with OpenAITestServer(responder=lambda msgs, body: f"got {len(msgs)}") as srv:
        assert _post(srv.base_url).json()["choices"][0]["message"]["content"] == "got 1"


def test_required_key():
    with OpenAITestServer(api_key="sk-right") as srv:
        assert _post(srv.base_url).status_code == 401
        assert _post(srv.base_url, headers={"Authorization": "Bearer sk-wrong"}).status_code == 401
        assert _post(srv.base_url, headers={"Authorization": "Bearer sk-right"}).status_code == 200
        assert srv.outcomes == {"401": 2, "ok": 1}


def test_fault_schedule_each_kind():
    faults = ["429", "500", "html", "truncated", "empty_choices", "drop", "stall"]
    with OpenAITestServer(faults=faults, retry_after=3, stall_s=0.5) as srv:
        r = _post(srv.base_url)
        assert r.status_code == 429 and r.headers["Retry-After"] == "3"
        assert r.json()["error"]["message"]
        assert _post(srv.base_url).status_code == 500
        r = _post(srv.base_url)
        assert r.status_code == 200 and r.headers["Content-Type"] == "text/html"
        r = _post(srv.base_url)
        with pytest.raises(json.JSONDecodeError):
            json.loads(r.content)
        assert _post(srv.base_url).json()["choices"] == []
        with pytest.raises(httpx.TransportError):
            _post(srv.base_url)
        t = time.monotonic()
        assert _post(srv.base_url).status_code == 200  # stall answers late
        assert time.monotonic() - t >= 0.45
        assert _post(srv.base_url).status_code == 200  # schedule exhausted -> ok
        assert srv.requests_total == 8
        assert srv.outcomes == {k: 1 for k in faults} | {"ok": 1}


def test_callable_schedule_and_http_date():
    with OpenAITestServer(faults=lambda n, body: "503" if n % 2 == 0 else "ok", retry_after=http_date(2)) as srv:
        r = _post(srv.base_url)
        assert r.status_code == 503
        assert _post(srv.base_url).status_code == 200
        srv.set_faults(["429"])
        r = _post(srv.base_url)
        assert r.status_code == 429 and r.headers["Retry-After"].endswith("GMT")


def test_latency_and_max_in_flight():
    import concurrent.futures as cf

    with OpenAITestServer(latency_s=0.3) as srv:
        t = time.monotonic()
        with cf.ThreadPoolExecutor(4) as ex:
            codes = list(ex.map(lambda _: _post(srv.base_url).status_code, range(4)))
        assert codes == [200] * 4
        assert 0.3 <= time.monotonic() - t < 1.2  # concurrent, not serial
        assert srv.max_in_flight == 4 and srv.in_flight == 0


def test_stop_is_prompt_with_a_stalled_request():
    srv = OpenAITestServer(faults=["stall"], stall_s=60)
    base = srv.start()
    with pytest.raises(httpx.TimeoutException):
        httpx.post(base + "/chat/completions", json=CHAT, timeout=0.3, trust_env=False)
    t = time.monotonic()
    srv.stop()
    assert time.monotonic() - t < 3


def test_cli_standalone():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "cowest.testing.openai_server", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(base + "/models", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)
        assert _post(base).json()["choices"][0]["message"]["content"].endswith("Answer: A")
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_body_cut_short_by_a_dying_client_is_not_a_request():
    # A killed client can send the headers and part of the body: that must not be logged or answered as `{}`.
    with OpenAITestServer() as srv:
        port = int(srv.base_url.split(":")[2].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 200\r\n\r\n{\"model\": ")
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100) == b""  # closed without an answer
        assert _post(srv.base_url).status_code == 200
        assert srv.requests_total == 1 and srv.outcomes == {"ok": 1} and srv.bodies == [CHAT]
