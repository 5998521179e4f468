"""A real served collaboration for the tests: tiny weak model + local OpenAI test server as the strong one."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn

from cowest.config import load_config
from cowest.models.strong import StrongClient
from cowest.serve.app import ServeOptions, build_app
from cowest.testing.openai_server import OpenAITestServer

MODEL = "served"


def serve_config(tiny_model_dir, tmp_path, *extra: str):
    return load_config(None, [
        "name=served", f"output_dir={tmp_path}", "task.name=demo", f"weak.model={tiny_model_dir}",
        "weak.device=cpu", "weak.max_new_tokens=8", "strong.api_key_env=null", "strong.max_retries=0",
        "strong.cache=false", *extra,
    ])


class ServerThread:
    """uvicorn serving ``app`` on a free loopback port, in a background thread."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture(scope="module")
def weak_model(tiny_model_dir, tmp_path_factory):
    from cowest.models.weak import WeakModel

    cfg = serve_config(tiny_model_dir, tmp_path_factory.mktemp("weakcfg"))
    return WeakModel.load(cfg.weak)


@pytest.fixture
def served(tiny_model_dir, tmp_path, weak_model):
    """A factory: ``served(**ServeOptions fields, latency_s=..., faults=..., overrides=[...])`` -> (url, strong
    test server, app); everything started is stopped at the end of the test."""
    stack = []

    def make(*, latency_s: float = 0.0, faults=None, overrides: tuple[str, ...] = (), on_shutdown=None, **opts):
        srv = OpenAITestServer(latency_s=latency_s, faults=faults).__enter__()
        stack.append(srv.stop)
        cfg = serve_config(tiny_model_dir, tmp_path, f"strong.base_url={srv.base_url}", *overrides)
        client = StrongClient(cfg.strong, cache_path=None, progress=False)
        options = ServeOptions(model_name=MODEL, **opts)
        app = build_app(cfg, weak_model, client, options, on_shutdown=on_shutdown)
        st = ServerThread(app).start()
        stack.append(st.stop)
        return st, srv, app

    yield make
    for fn in reversed(stack):
        fn()
