"""The local strong-model server that cowest starts and stops: ``strong.local.gguf`` is the one switch.

    with strong_endpoint(cfg.strong, run_dir) as strong_cfg:   # cfg unchanged without strong.local.gguf
        client = StrongClient(strong_cfg, ...)

Two engines behind the same OpenAI chat API (``strong.local.engine``):

- ``batch``: :mod:`cowest.models.batch_server`, transformers on a bf16 model directory converted once from the
  GGUF (:mod:`cowest.models.gguf_convert`), in bf16 or int8 (``strong.local.dtype``); continuous batching or a static
  batched decode loop. It answers the requests in flight together (``strong.max_concurrency`` up to ``parallel``).
- ``llama.cpp`` (the ``[local]`` extra): with ``parallel`` > 1, :mod:`cowest.models.llama_batch`, many requests
  decoded together; with ``parallel=1``, ``python -m llama_cpp.server`` through :mod:`cowest.models.llama_launch`.
- ``auto`` (default): :func:`cowest.models.engine_choice.engine_decision`.

Either runs in a subprocess of its own session on 127.0.0.1, its output in ``<log_dir>/<engine>_server.log``. It
is ready once it has listed its model and generated one token, so a server that cannot generate fails at start.
While it runs, the strong client asks it whether it is alive before retrying a failed request: a dead server
stops the stage at once with one line (``ServerCrashed``) naming how it exited and where its log is. It is
stopped with SIGTERM, then SIGKILL, when the block exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from cowest.config import StrongConfig
from cowest.errors import ModelError
from cowest.models.engine_choice import resolve_engine

PIP_HINT = "pip install 'cowest[local]'"
# the batch engine's served name per strong.local.dtype: its answers are cached apart from llama.cpp's and each other's
ALIAS_SUFFIX = {"auto": "bf16", "bfloat16": "bf16", "float32": "f32", "int8": "int8"}
# llama_cpp.server imports these; checked up front so a missing one is a clear message, not a dead child.
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


def check_llama_cpp() -> None:
    missing = [m for m in _SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelError(f"the local strong-model server needs llama-cpp-python[server] "
                         f"(missing: {', '.join(missing)}); run: {PIP_HINT}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def describe_exit(returncode: int) -> str:
    """``exited with code 3`` / ``exited with SIGILL (illegal instruction)`` for a Popen return code."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        sig = signal.Signals(-returncode)
    except ValueError:
        return f"was killed by signal {-returncode}"
    what = signal.strsignal(sig) or ""
    return f"exited with {sig.name}" + (f" ({what.lower()})" if what else "")


def _die_with_parent() -> Any:
    """A preexec_fn asking Linux to send the child SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG);
    None elsewhere. The libc function is looked up here, before the fork: the child only calls it. SIGKILL, not
    SIGTERM: on SIGTERM llama.cpp's server shuts down gracefully, finishing the request in progress for a client
    that is gone, and stayed alive for 30 s and more after its parent was killed."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import ctypes.util

    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)
    return lambda: prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:]) or "(empty log)"


class ManagedServer:
    """A server child process: ``start()`` -> base_url, ``stop()``; a context manager. ``model`` is the id the
    server reports. Subclasses say what to run (``command``) and check what it needs (``check``)."""

    label = "local strong server"
    hints: dict[int, str] = {-signal.SIGKILL: "killed from outside, often by the kernel when memory ran out"}

    def __init__(
        self,
        path: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        model_alias: str | None = None,
        log_path: str | Path | None = None,
        startup_timeout_s: float = 300.0,
    ):
        self.path = Path(path)
        self.host, self.port = host, port
        self.model_alias = model_alias or self.path.stem
        self.log_path = Path(log_path) if log_path else Path("local_server.log")
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.model: str | None = None
        self._unwatch: Any = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def check(self) -> None:
        """Raise ModelError if what the server needs is missing."""

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> str:
        if self.proc is not None:
            return self.base_url
        self.check()
        if not self.port:
            self.port = free_port(self.host)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.command())}\n".encode())
            log.flush()
            # own session: SIGTERM/SIGKILL reach the server and anything it spawns, not our process group;
            # and the server gets SIGKILL if cowest itself dies (even by SIGKILL), so no orphan keeps its memory
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent())
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        from cowest.models.strong import watch_endpoint

        self._unwatch = watch_endpoint(self.base_url, self.failure)
        return self.base_url

    def failure(self, wait_s: float = 0.0) -> str | None:
        """None while the server runs; else one line saying how it exited and where its log is. ``wait_s``:
        how long to wait for an exit first (a dying server closes its sockets before it can be reaped)."""
        code = self._exit_code(wait_s)
        if code is None:
            return None
        hint = self.hints.get(code)
        return f"{self._exited(code)}" + (f": {hint}" if hint else "") + f" — see {self.log_path}"

    def _exit_code(self, wait_s: float = 0.0) -> int | None:
        """The server's exit code, or None while it runs (or was never started)."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(wait_s) if wait_s > 0 else self.proc.poll()
        except subprocess.TimeoutExpired:
            return None

    def _exited(self, code: int) -> str:
        return f"{self.label} for {self.path.name} {describe_exit(code)}"

    def _wait_ready(self) -> None:
        """Listed models, then one generated token: a server that loads but cannot generate fails here."""
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(timeout=2.0, trust_env=False) as http:
            while self.model is None:
                self._check_alive("while starting")
                try:
                    r = http.get(self.base_url + "/models")
                    if r.status_code == 200:
                        data = r.json().get("data") or [{}]
                        self.model = data[0].get("id") or self.model_alias
                        break
                except (httpx.TransportError, ValueError):
                    pass
                self._check_deadline(deadline)
                time.sleep(0.25)
            body = {"model": self.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1,
                    "temperature": 0}
            while True:
                try:
                    r = http.post(self.base_url + "/chat/completions", json=body,
                                  timeout=max(1.0, deadline - time.monotonic()))
                    if r.status_code == 200 and (r.json().get("choices") or None):
                        self._check_alive("while starting")  # the answer came from our child, not a port squatter
                        return
                    detail = f"HTTP {r.status_code}: {r.text[:200]}"
                except (httpx.TransportError, ValueError) as e:
                    detail = f"{type(e).__name__}: {e}"
                self._check_alive("on its first completion", wait_s=2.0)
                self._check_deadline(deadline, detail)
                time.sleep(0.5)

    def _check_alive(self, when: str, wait_s: float = 0.0) -> None:
        code = self._exit_code(wait_s)
        if code is not None:
            hint = self.hints.get(code)
            raise ModelError(f"{self._exited(code)} {when}" + (f" ({hint})" if hint else "")
                             + f"; last lines of {self.log_path}:\n{_tail(self.log_path)}")

    def _check_deadline(self, deadline: float, detail: str = "") -> None:
        if time.monotonic() > deadline:
            raise ModelError(
                f"{self.label} for {self.path.name} not ready after {self.startup_timeout_s:g}s "
                f"(strong.local.startup_timeout_s){'; last answer: ' + detail if detail else ''}; "
                f"last lines of {self.log_path}:\n{_tail(self.log_path)}")

    def stop(self, grace_s: float = 10.0) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> "ManagedServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running at {self.base_url}" if self.proc is not None else "stopped"
        return f"{type(self).__name__}({self.path.name!r}, {state})"


class LlamaServer(ManagedServer):
    """``python -m llama_cpp.server`` for a GGUF file (the ``[local]`` extra); one request at a time."""

    label = "llama.cpp server"
    hints = {**ManagedServer.hints,
             -signal.SIGILL: "its llama.cpp build uses CPU instructions this machine cannot run; rebuild it with "
                             "scripts/setup.sh (COWEST_REBUILD_LLAMA=1), or set strong.local.extra_bufts=off"}

    def __init__(self, gguf: str | Path, *, n_ctx: int = 4096, n_threads: int | None = None, extra_bufts: str = "auto",
                 logprobs: bool = False, extra_args: list[str] | None = None, **kw: Any):
        kw.setdefault("log_path", "llama_server.log")
        super().__init__(gguf, **kw)
        self.n_ctx, self.n_threads, self.extra_bufts, self.logprobs = n_ctx, n_threads, extra_bufts, logprobs
        self.extra_args = list(extra_args or [])

    def check(self) -> None:
        check_llama_cpp()
        if not self.path.is_file():
            raise ModelError(f"strong model GGUF not found: {self.path}")

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "cowest.models.llama_launch", "--extra-bufts", self.extra_bufts,
               "--model", str(self.path), "--model_alias", self.model_alias,
               "--host", self.host, "--port", str(self.port), "--n_ctx", str(self.n_ctx)]
        # Generation threads: llama-cpp-python's default is half the logical CPUs, 1 on a 2-core VM.
        from cowest.models.cpu import physical_cores

        cmd += ["--n_threads", str(self.n_threads or physical_cores())]
        # Token log-probs need logits for every token, and llama-cpp-python's default computes them for every prompt
        # token too (the output layer over a 152k vocabulary, per token): off unless asked, 1.13x calls/s on IfQA
        # prompts with the same answers (bench/RESULTS.md, "Prompt prefixes").
        cmd += ["--logits_all", "true" if self.logprobs else "false"]
        return cmd + self.extra_args


class LlamaBatchServer(ManagedServer):
    """:mod:`cowest.models.llama_batch` for a GGUF file: llama.cpp with up to ``max_batch`` requests decoded
    together (``strong.local.parallel`` > 1)."""

    label = "llama.cpp batch server"
    hints = LlamaServer.hints

    def __init__(self, gguf: str | Path, *, n_ctx: int = 4096, threads: int | None = None, max_batch: int = 32,
                 kv_tokens: int = 16384, extra_bufts: str = "auto", **kw: Any):
        kw.setdefault("log_path", "llama_batch_server.log")
        super().__init__(gguf, **kw)
        self.n_ctx, self.threads, self.max_batch, self.kv_tokens = n_ctx, threads, max_batch, kv_tokens
        self.extra_bufts = extra_bufts

    check = LlamaServer.check

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "cowest.models.llama_batch", "--model", str(self.path), "--served-name",
               self.model_alias, "--host", self.host, "--port", str(self.port), "--n-ctx", str(self.n_ctx),
               "--max-batch", str(self.max_batch), "--kv-tokens", str(self.kv_tokens), "--extra-bufts",
               self.extra_bufts]
        return cmd + (["--threads", str(self.threads)] if self.threads else [])


class BatchServer(ManagedServer):
    """:mod:`cowest.models.batch_server` for a transformers model directory; answers up to ``max_batch`` requests
    together."""

    label = "cowest batch server"

    def __init__(self, model_dir: str | Path, *, n_ctx: int = 4096, threads: int | None = None, max_batch: int = 32,
                 max_batch_tokens: int = 32768, dtype: str = "auto", batching: str = "continuous",
                 kv_tokens: int = 16384, **kw: Any):
        kw.setdefault("log_path", "batch_server.log")
        super().__init__(model_dir, **kw)
        self.n_ctx, self.threads, self.max_batch, self.max_batch_tokens = n_ctx, threads, max_batch, max_batch_tokens
        self.dtype, self.batching, self.kv_tokens = dtype, batching, kv_tokens

    def check(self) -> None:
        if not (self.path / "config.json").is_file():
            raise ModelError(f"strong model directory has no config.json: {self.path}")

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "cowest.models.batch_server", "--model", str(self.path),
               "--served-name", self.model_alias, "--host", self.host, "--port", str(self.port),
               "--n-ctx", str(self.n_ctx), "--max-batch", str(self.max_batch),
               "--max-batch-tokens", str(self.max_batch_tokens), "--dtype", self.dtype,
               "--batching", self.batching, "--kv-tokens", str(self.kv_tokens)]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        return cmd


# The batch engine answers the requests in flight together, so each waits for the others' share of the batch: 64
# SFT-rationale requests at once took up to ~290 s each against a 120 s strong.timeout_s (bench/RESULTS.md). The
# slowest workload measured, chain-of-thought answers, ran at 0.25 calls/s on 2 cores; 10 s per request in flight
# leaves a 2.5x margin. A crashed server is caught at once anyway (ManagedServer watches the child).
BATCH_SECONDS_PER_REQUEST = 10.0


def make_server(local: Any, log_dir: str | Path, *, logprobs: bool = False) -> ManagedServer:
    """The managed server ``strong.local`` describes (not started yet); ``logprobs``: it must return token
    log-probs (the likelihood evaluator)."""
    from cowest.models.offline import cache_root, resolve_strong_gguf

    engine = resolve_engine(local.engine)
    common = dict(host=local.host, port=local.port, startup_timeout_s=local.startup_timeout_s)
    if engine == "llama.cpp":
        check_llama_cpp()  # before a possibly long GGUF assembly
    gguf = resolve_strong_gguf(local.gguf)
    if engine == "llama.cpp" and local.parallel > 1:  # same weights and answers' cache name as the one-slot server
        return LlamaBatchServer(gguf, n_ctx=local.n_ctx, threads=local.threads, max_batch=local.parallel,
                                kv_tokens=local.kv_tokens, extra_bufts=local.extra_bufts,
                                log_path=Path(log_dir) / "llama_batch_server.log", **common)
    if engine == "llama.cpp":
        return LlamaServer(gguf, n_ctx=local.n_ctx, n_threads=local.threads, extra_bufts=local.extra_bufts,
                           logprobs=logprobs, log_path=Path(log_dir) / "llama_server.log", **common)
    from cowest.models.gguf_convert import gguf_to_hf

    tag = hashlib.sha256(f"{gguf.resolve()}:{gguf.stat().st_size}".encode()).hexdigest()[:8]
    model_dir = gguf_to_hf(gguf, cache_root() / "models" / f"{gguf.stem}-{tag}-bf16")
    return BatchServer(model_dir, n_ctx=local.n_ctx, threads=local.threads, max_batch=local.parallel,
                       batching=local.batching, kv_tokens=local.kv_tokens, dtype=local.dtype,
                       # another name than llama.cpp's: its bf16 answers are cached apart from the Q4 ones
                       model_alias=f"{gguf.stem}-{ALIAS_SUFFIX[local.dtype]}",
                       log_path=Path(log_dir) / "batch_server.log", **common)


@contextlib.contextmanager
def strong_endpoint(cfg: StrongConfig, log_dir: str | Path, *, logprobs: bool = False) -> Iterator[StrongConfig]:
    """Yield the strong config to use: unchanged, or pointed at a local server started for ``cfg.local.gguf``
    (stopped when the block exits; ``logprobs``: one that returns token log-probs)."""
    if not cfg.local.gguf:
        yield cfg
        return
    with make_server(cfg.local, log_dir, logprobs=logprobs) as srv:
        parallel = 1 if isinstance(srv, LlamaServer) else cfg.local.parallel  # one slot: more would only queue
        in_flight = max(1, min(cfg.max_concurrency, parallel))
        yield dataclasses.replace(
            cfg,
            base_url=srv.base_url,
            model=srv.model or srv.model_alias,
            api_key_env=None,  # a local server needs no key: never send the user's real one to it
            max_concurrency=in_flight,
            timeout_s=max(cfg.timeout_s, BATCH_SECONDS_PER_REQUEST * in_flight),
        )
