"""``cowest serve`` as a user runs it: a subprocess, a bearer key from the environment, SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import openai
import pytest
from openai import OpenAI

from cowest.cli.serve import recipe_names_task
from cowest.serve.runner import is_loopback
from cowest.testing.openai_server import OpenAITestServer

KEY = "k-test-0123456789"


def cli(tmp_path, tiny_model_dir, base_url: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "cowest", "serve", "name=cli", f"output_dir={tmp_path}", "task.name=demo",
        f"weak.model={tiny_model_dir}", "weak.device=cpu", "weak.max_new_tokens=8", f"strong.base_url={base_url}",
        "strong.api_key_env=null", "--port", "0", "--log-level", "warning", *extra,
    ]


def wait_for_url(proc: subprocess.Popen, timeout: float = 120) -> tuple[str, list[str]]:
    lines: list[str] = []
    out: dict[str, str] = {}

    def read():
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", line)
            if m and "url" not in out:
                out["url"] = m.group(1)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while "url" not in out:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server did not start: {''.join(lines)}{proc.stderr.read()}")
        time.sleep(0.1)
    return out["url"], lines


def test_cli_serves_with_key_and_finishes_in_flight_request_on_sigterm(tmp_path, tiny_model_dir):
    with OpenAITestServer(latency_s=1.5) as srv:
        env = {**os.environ, "COWEST_SERVE_KEY": KEY}
        proc = subprocess.Popen(cli(tmp_path, tiny_model_dir, srv.base_url, "--api-key-env", "COWEST_SERVE_KEY"),
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            url, lines = wait_for_url(proc)
            c = OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=60)
            assert [m.id for m in c.models.list()] == ["cli"]
            with pytest.raises(openai.AuthenticationError):
                OpenAI(base_url=url, api_key="nope", max_retries=0).models.list()
            result = {}

            def slow():
                result["resp"] = c.chat.completions.create(
                    model="cli", messages=[{"role": "user", "content": "Who owns the Zephyr drone?"}],
                    extra_body={"cowest": {"return_draft": True}})

            t = threading.Thread(target=slow)
            t.start()
            deadline = time.monotonic() + 60
            while srv.requests_total < 1:  # in flight: the strong model is answering it
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            t.join(timeout=60)
            resp = result["resp"]
            assert resp.choices[0].message.content.endswith("Answer: A")
            assert "<draft>" in srv.bodies[0]["messages"][1]["content"]
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        err = proc.stderr.read()
        assert KEY not in err and KEY not in "".join(lines)


def test_cli_refuses_an_unset_key_variable_and_a_taken_port(tmp_path, tiny_model_dir):
    env = {k: v for k, v in os.environ.items() if k != "COWEST_NO_SUCH_KEY"}
    r = subprocess.run(cli(tmp_path, tiny_model_dir, "http://127.0.0.1:9/v1", "--api-key-env", "COWEST_NO_SUCH_KEY"),
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --api-key-env COWEST_NO_SUCH_KEY: the environment variable COWEST_NO_SUCH_KEY is not set or empty"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        args = cli(tmp_path, tiny_model_dir, "http://127.0.0.1:9/v1")
        args[args.index("--port") + 1] = str(port)
        r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}")


def test_recipe_names_task(tmp_path):
    with_task = tmp_path / "a.yaml"
    with_task.write_text("name: a\ntask: {name: medmcqa}\n")
    without = tmp_path / "b.yaml"
    without.write_text("name: b\nweak: {model: x}\n")
    assert recipe_names_task(with_task, [])
    assert not recipe_names_task(without, ["weak.device=cpu"])
    assert recipe_names_task(without, ["task.name=ifqa"])
    assert recipe_names_task(None, ["task.name=ifqa"]) and not recipe_names_task(None, None)
    assert recipe_names_task("task.name=demo", [])  # a lone override in the recipe slot


@pytest.mark.parametrize("host, loop", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                        ("0.0.0.0", False), ("10.1.2.3", False), ("example.org", False)])
def test_is_loopback(host, loop):
    assert is_loopback(host) is loop
