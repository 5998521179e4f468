"""Run the app under uvicorn: load both models, listen, and shut down gracefully.

On SIGTERM/SIGINT uvicorn stops accepting connections and lets in-flight requests finish (up to
``shutdown_timeout_s``); the app's lifespan then closes the strong client and stops a managed
llama.cpp server, and the command exits with status 0.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import sys
import threading
from typing import Any

import uvicorn

from cowest.config import RunConfig
from cowest.errors import ConfigError
from cowest.serve.app import ServeOptions, build_app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """Bind before the (slow) model loads, so a taken port fails at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def read_api_key(env: str | None) -> str | None:
    """The bearer key from the environment variable named ``env`` (the key itself is never logged)."""
    if not env:
        return None
    key = os.environ.get(env, "").strip()
    if not key:
        raise ConfigError(f"--api-key-env {env}: the environment variable {env} is not set or empty")
    return key


def run_server(
    cfg: RunConfig,
    opts: ServeOptions,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    shutdown_timeout_s: float = 60.0,
    log_level: str = "info",
) -> None:
    from cowest.endpoint import open_strong
    from cowest.serve.weak import load_serving_weak

    if not is_loopback(host) and opts.api_key is None:
        print(f"warning: serving on {host} without an API key; anyone who can reach it can spend your "
              "strong-model budget (use --api-key-env)", file=sys.stderr)
    sock = bind(host, port)
    stack = contextlib.ExitStack()
    stack.callback(sock.close)
    try:
        # No response cache: a served model must sample afresh for repeated questions.
        client = stack.enter_context(open_strong(cfg, cache=False, progress=False,
                                                 max_concurrency=opts.max_concurrency))
        weak, weak_desc = load_serving_weak(cfg)
        app = build_app(cfg, weak, client, opts, on_shutdown=[stack.close])
        server = uvicorn.Server(uvicorn.Config(
            app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=int(shutdown_timeout_s) or None,
        ))
        actual_port = sock.getsockname()[1]
        print(f"cowest serve: model {app.state.model_name!r} at http://{host}:{actual_port}/v1\n"
              f"  weak:   {weak_desc}\n  strong: {client.cfg.model} at {client.endpoint}\n"
              f"  gate:   {_gate_line(opts.gate)}\n"
              f"  auth:   {'bearer key required' if opts.api_key else 'none'}; "
              f"concurrency {opts.max_concurrency}, queue {opts.max_queue}", flush=True)
        with _quiet_signals():
            server.run(sockets=[sock])
    finally:
        stack.close()


def _gate_line(gate: Any) -> str:
    if gate is None:
        return "off (every request collaborates)"
    return (f"{gate.score} < {gate.threshold:.4g} goes to the strong model (calibrated for "
            f"{100 * gate.strong_share:.0f}% strong calls)")


@contextlib.contextmanager
def _quiet_signals() -> Any:
    """uvicorn handles SIGINT/SIGTERM while serving, then re-raises the signal to the handler it found.
    Finding these no-ops there, the re-raise returns here after a clean shutdown instead of killing the
    process (SIGTERM's default) or raising KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():  # signals belong to the main thread
        yield
        return
    handled = [signal.SIGINT, signal.SIGTERM]
    saved = {s: signal.signal(s, lambda *_: None) for s in handled}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
