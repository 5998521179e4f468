"""A real local OpenAI-compatible chat server for tests and benchmarks, with scheduled fault injection.

    with OpenAITestServer(faults=["429", "ok", "stall"], retry_after=1) as srv:
        client = StrongClient(replace(cfg, base_url=srv.base_url))
        ...
        srv.outcomes   # Counter({"ok": .., "429": .., "stall": ..})

Fault kinds (one consumed per chat request; "ok" once the list runs out):
  ok             a normal answer from ``responder``
  "<status>"     e.g. "429", "500", "400": that status with an OpenAI-style error body
                 (429 carries ``Retry-After`` when ``retry_after`` is set: seconds or an HTTP-date)
  stall          sleep ``stall_s`` before answering normally (past the client's timeout)
  drop           close the connection without any response
  truncated      200 with the JSON body cut in half
  empty_choices  200 with ``"choices": []``
  html           200 with an HTML page (a misrouted proxy / web server)
A request with ``"logprobs": true`` gets OpenAI's ``choices[0].logprobs.content`` (``top_logprobs`` alternatives
per token): from the responder when it returns ``{"content": text, "logprobs": logprobs_content(text, ...)}``,
else every token certain (probability 1, no alternative).
Run standalone: ``python -m cowest.testing.openai_server --port 8080``.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import os
import re
import socket
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Responder = Callable[[list[dict[str, Any]], dict[str, Any]], "str | dict[str, Any]"]
FaultSchedule = list[str] | Callable[[int, dict[str, Any]], str] | None

FAULT_KINDS = ("ok", "stall", "drop", "truncated", "empty_choices", "html")


def default_responder(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
    """Deterministic: a hash of the last user message, then a parseable answer."""
    last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    digest = hashlib.sha256(str(last).encode("utf-8")).hexdigest()[:12]
    return f"Echo {digest}. The draft looks right.\nAnswer: A"


def tokenize(text: str) -> list[str]:
    """Word-and-punctuation tokens with their leading whitespace, as BPE tokenizers split ("Answer", ":", " B");
    they join back to ``text``."""
    return re.findall(r"\s*\w+|\s*[^\s\w]|\s+", text)


def logprobs_content(text: str, alternatives: dict[str, dict[str, float]] | None = None) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs.content`` for ``text``: a token listed in ``alternatives`` gets those
    ``{token: probability}`` as its top alternatives (most likely first), every other token probability 1."""
    out = []
    for tok in tokenize(text):
        alts = (alternatives or {}).get(tok, {tok: 1.0})
        top = [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in sorted(alts.items(), key=lambda a: -a[1])]
        out.append({"token": tok, "logprob": math.log(alts.get(tok, 1.0)), "bytes": None, "top_logprobs": top})
    return out


def _words(text: Any) -> int:
    return len(str(text).split())


class OpenAITestServer:
    """``start()`` -> base_url (``http://127.0.0.1:PORT/v1``), ``stop()``; also a context manager."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        faults: FaultSchedule = None,
        latency_s: float = 0.0,
        api_key: str | None = None,
        retry_after: float | str | None = None,
        stall_s: float = 30.0,
        model: str = "test-strong",
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.responder = responder or default_responder
        self.latency_s = latency_s
        self.api_key = api_key
        self.retry_after = retry_after
        self.stall_s = stall_s
        self.model = model
        self.host = host
        self.port = port
        self._faults = faults
        self._schedule = list(faults) if isinstance(faults, (list, tuple)) else []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests_total = 0  # chat requests received
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[dict[str, Any]] = []  # parsed request bodies, in arrival order
        self.arrivals: list[float] = []  # time.monotonic() of each chat request

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self._httpd.server_address[1]}/v1"

    def start(self) -> str:
        if self._httpd is not None:
            return self.base_url
        handler = type("Handler", (_Handler,), {"app": self})
        self._httpd = _Server((self.host, self.port), handler)
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="openai-test-server", daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()  # wakes stalled handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> "OpenAITestServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Foreground mode for the CLI."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # -- request bookkeeping -----------------------------------------------------------------------
    def _next_fault(self, body: dict[str, Any]) -> str:
        with self._lock:
            n = self.requests_total
            self.requests_total += 1
            self.bodies.append(body)
            self.arrivals.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if callable(self._faults):
                kind = None
            else:
                kind = self._schedule.pop(0) if self._schedule else "ok"
        if kind is None:  # call a user schedule outside the lock
            kind = str(self._faults(n, body)) if callable(self._faults) else "ok"
        return str(kind)

    def _done(self, outcome: str) -> None:
        with self._lock:
            self.in_flight -= 1
            self.outcomes[outcome] += 1

    def reset_counts(self) -> None:
        with self._lock:
            self.requests_total = 0
            self.outcomes.clear()
            self.max_in_flight = self.in_flight
            self.bodies.clear()
            self.arrivals.clear()

    def set_faults(self, faults: FaultSchedule) -> None:
        with self._lock:
            self._faults = faults
            self._schedule = list(faults) if isinstance(faults, (list, tuple)) else []

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        reply = self.responder(messages, body)
        text, lp = (reply["content"], reply.get("logprobs")) if isinstance(reply, dict) else (reply, None)
        prompt = sum(_words(m.get("content", "")) for m in messages)
        completion = _words(text)
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        if body.get("logprobs"):
            n = int(body.get("top_logprobs") or 0)
            content = lp if lp is not None else logprobs_content(text)
            choice["logprobs"] = {"content": [{**t, "top_logprobs": t["top_logprobs"][:n]} for t in content]}
        return {
            "id": f"chatcmpl-{self.requests_total}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [choice],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default listen backlog of 5 drops SYNs under concurrent load (1 s stalls)
    daemon_threads = True  # stalled handlers must not block stop()


class _Handler(BaseHTTPRequestHandler):
    app: OpenAITestServer
    protocol_version = "HTTP/1.1"  # keep-alive, like real API servers
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid 40 ms ACK stalls

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read counters instead
        pass

    def _send(self, status: int, payload: bytes, ctype: str = "application/json", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(*self._error_reply(status, message, headers))

    def _authorized(self) -> bool:
        key = self.app.api_key
        return key is None or self.headers.get("Authorization", "") == f"Bearer {key}"

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            self._error(404, f"no route {self.path}")
            return
        if not self._authorized():
            self._error(401, "Incorrect API key provided.")
            return
        data = {"object": "list", "data": [{"id": self.app.model, "object": "model", "owned_by": "cowest-test"}]}
        self._send(200, json.dumps(data).encode())

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:  # the client died mid-request (a killed run): nothing to log or answer
            self.close_connection = True
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, f"no route {self.path}")
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            self._error(400, "request body is not a JSON object")
            return
        app = self.app
        kind = app._next_fault(body)
        # Counters are settled *before* the last byte goes out, so a client that has its answer
        # always sees them up to date (no race between the reply and the bookkeeping).
        try:
            outcome, reply = self._decide(kind, body)
        except BaseException:
            app._done("error")
            raise
        app._done(outcome)
        try:
            if reply is None:  # drop: no status line at all
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            else:
                self._send(*reply)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. its timeout)
            self.close_connection = True

    def _decide(self, kind: str, body: dict[str, Any]) -> tuple[str, tuple | None]:
        """(outcome, (status, payload, content_type, headers) or None to drop the connection)."""
        app = self.app
        if not self._authorized():
            # Echo the presented key, as careless servers do: clients must scrub it from errors.
            got = self.headers.get("Authorization", "").removeprefix("Bearer ")
            return "401", self._error_reply(401, f"Incorrect API key provided: {got or '(none)'}.")
        if app.latency_s:
            app._stopping.wait(app.latency_s)
        if kind.isdigit():
            headers = {}
            if kind == "429" and app.retry_after is not None:
                ra = app.retry_after
                headers["Retry-After"] = ra if isinstance(ra, str) else str(ra)
            return kind, self._error_reply(int(kind), f"injected fault {kind}", headers)
        if kind == "stall":
            app._stopping.wait(app.stall_s)
            return kind, (200, json.dumps(app.completion(body)).encode(), "application/json", None)
        if kind == "drop":
            return kind, None
        if kind == "truncated":
            full = json.dumps(app.completion(body)).encode()
            return kind, (200, full[: len(full) // 2], "application/json", None)
        if kind == "empty_choices":
            data = app.completion(body)
            data["choices"] = []
            return kind, (200, json.dumps(data).encode(), "application/json", None)
        if kind == "html":
            page = b"<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>"
            return kind, (200, page, "text/html", None)
        return "ok", (200, json.dumps(app.completion(body)).encode(), "application/json", None)

    @staticmethod
    def _error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> tuple:
        err = {"error": {"message": message, "type": "test_server_error", "code": status}}
        return status, json.dumps(err).encode(), "application/json", headers


def http_date(seconds_from_now: float) -> str:
    """An HTTP-date ``seconds_from_now`` in the future (for a ``Retry-After`` header)."""
    return formatdate(time.time() + seconds_from_now, usegmt=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="A local OpenAI-compatible chat server (deterministic replies).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--model", default="test-strong")
    p.add_argument("--latency", type=float, default=0.0, help="seconds to wait before each answer")
    p.add_argument("--faults", default="", help="comma-separated schedule, e.g. 429,ok,500,stall")
    p.add_argument("--retry-after", default=None, help="Retry-After value sent with 429")
    p.add_argument("--api-key-env", default=None, help="require the key held in this env var")
    a = p.parse_args(argv)
    key = os.environ.get(a.api_key_env) if a.api_key_env else None
    faults = [f.strip() for f in a.faults.split(",") if f.strip()]
    srv = OpenAITestServer(faults=faults, latency_s=a.latency, api_key=key, retry_after=a.retry_after,
                           model=a.model, host=a.host, port=a.port)
    srv.start()
    print(f"serving {srv.base_url} (model {a.model!r}); Ctrl-C to stop", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
