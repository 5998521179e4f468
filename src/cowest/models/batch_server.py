"""cowest's own local strong-model server: the chat requests in flight answered together, in batches.

    python -m cowest.models.batch_server --model DIR --port 8123 [--served-name NAME] [--max-batch 32]
        [--batching continuous|static] [--kv-tokens 16384]

Speaks the part of the OpenAI chat API that cowest uses (``GET /v1/models``, ``POST /v1/chat/completions``
with temperature, top_p, max_tokens, stop, logprobs and top_logprobs; no streaming), over the standard library's
HTTP server. On CPUs the weights are bf16 where the CPU computes bf16 natively, packed once for oneDNN
(:mod:`cowest.models.packed`), so that a batch of 32 costs little more per step than one request.

Two schedulers. ``continuous`` (default): greedy requests go to :mod:`cowest.models.continuous` (transformers'
continuous batching manager): a request joins the running batch in the next step, a finished row leaves at once,
prompt pages shared by several requests are computed once, and the KV cache is a fixed pool of ``--kv-tokens``
token slots. ``static`` (and, under ``continuous``, requests with temperature > 0): handler threads queue their
request; one engine thread takes everything queued (up to ``--max-batch``), groups it by sampling settings and
runs each group through :meth:`WeakModel.complete`, the project's batched decode loop; the batch returns when its
longest answer ends. Each batch or request is logged: tokens, seconds.

On CPUs whose bf16 matmuls outrun llama.cpp's quantized kernels (AMX) this is the faster engine; elsewhere
llama.cpp answering many requests at once (:mod:`cowest.models.llama_batch`) is (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import queue
import select
import socket
import sys
import threading
import time
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cowest.models.continuous import BadRequest
from cowest.models.token_logprobs import MAX_TOP_LOGPROBS, cut_to_text, openai_logprobs


class Job:
    def __init__(self, body: dict[str, Any]):
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise BadRequest("'messages' must be a non-empty list of {role, content} objects")
        if body.get("stream"):
            raise BadRequest("streaming is not supported by this server")
        if int(body.get("n") or 1) != 1:
            raise BadRequest("n must be 1")
        self.messages = [{"role": str(m.get("role", "user")), "content": str(m.get("content") or "")} for m in messages]
        self.temperature = float(body.get("temperature") if body.get("temperature") is not None else 1.0)
        self.top_p = float(body.get("top_p") if body.get("top_p") is not None else 1.0)
        self.max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 256)
        stop = body.get("stop")
        self.stop = [stop] if isinstance(stop, str) else [str(s) for s in (stop or [])]
        if self.max_tokens < 1 or not 0 <= self.temperature <= 2 or not 0 < self.top_p <= 1:
            raise BadRequest("need max_tokens >= 1, 0 <= temperature <= 2 and 0 < top_p <= 1")
        # OpenAI's logprobs (bool) and top_logprobs (0-20 alternatives per token, needs logprobs)
        self.top_logprobs: int | None = int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
        if body.get("top_logprobs") and not body.get("logprobs"):
            raise BadRequest("top_logprobs needs logprobs: true")
        if self.top_logprobs is not None and not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise BadRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
        # llama.cpp's extension (as llama_cpp.server reads it): honoured by cowest.models.llama_batch only
        rp = body.get("repeat_penalty")
        self.repeat_penalty: float | None = None if rp is None else float(rp)
        if self.repeat_penalty is not None and self.repeat_penalty <= 0:
            raise BadRequest("repeat_penalty must be > 0")
        self.future: Future = Future()
        self.rid: str | None = None  # the continuous engine's request id
        self.cancelled = False  # its client left: not started yet, it is skipped; running, it runs on (static)

    @property
    def group(self) -> tuple:
        # One batch decodes with one setting. Greedy requests share one whatever their top_p.
        sampling = (0.0, 1.0) if self.temperature == 0 else (self.temperature, self.top_p)
        return (*sampling, self.max_tokens, self.top_logprobs)


class Engine:
    """The model and the batching loop (one thread)."""

    def __init__(self, model: Any, *, max_batch: int, n_ctx: int, gather_s: float = 0.05, gather_max_s: float = 0.5,
                 log: Any = print):
        self.model, self.max_batch, self.n_ctx, self.log = model, max_batch, n_ctx, log
        self.gather_s, self.gather_max_s = gather_s, gather_max_s
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.batches = 0

    def submit(self, job: Job) -> Future:
        self.jobs.put(job)
        return job.future

    def cancel(self, job: Job) -> None:
        job.cancelled = True

    def health(self) -> dict[str, Any]:
        """What ``GET /health`` reports; every engine behind :func:`make_handler` has one."""
        return {"status": "ok", "scheduler": "static", "queued": self.jobs.qsize(), "batches": self.batches}

    def take(self) -> list[Job]:
        """Block for one job, then take more while they keep coming (each within ``gather_s`` of the last, for
        at most ``gather_max_s``): a client opening many connections at once staggers them by milliseconds."""
        batch = [self.jobs.get()]
        cap = time.monotonic() + self.gather_max_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self.jobs.get(timeout=max(0.0, min(self.gather_s, cap - time.monotonic()))))
            except queue.Empty:
                break
        return batch

    def run_forever(self) -> None:
        while True:
            batch = self.take()
            groups: dict[tuple, list[Job]] = {}
            for job in batch:
                groups.setdefault(job.group, []).append(job)
            for (temperature, top_p, max_tokens, top_logprobs), jobs in groups.items():
                self.run(jobs, temperature, top_p, max_tokens, top_logprobs)

    def run(self, jobs: list[Job], temperature: float, top_p: float, max_tokens: int,
            top_logprobs: int | None = None) -> None:
        t0 = time.perf_counter()
        fits = []
        for j in jobs:  # tokenized here, in the model's thread (one tokenizer is not shared across threads)
            if j.cancelled:  # its client left before the batch started
                continue
            n = self.model.prompt_tokens(j.messages)
            if n + max_tokens > self.n_ctx:
                j.future.set_exception(BadRequest(
                    f"prompt ({n} tokens) + max_tokens ({max_tokens}) exceed the context of {self.n_ctx} tokens"))
            else:
                fits.append(j)
        jobs = fits
        if not jobs:
            return
        try:
            done = self.model.complete([j.messages for j in jobs], temperature=temperature, top_p=top_p,
                                       max_new_tokens=max_tokens, seed=self.batches, top_logprobs=top_logprobs)
        except Exception as e:  # noqa: BLE001 - every waiting request gets the error (HTTP 500), the server goes on
            for j in jobs:
                j.future.set_exception(RuntimeError(f"{type(e).__name__}: {e}"))
            self.log(f"batch {self.batches}: {len(jobs)} requests failed: {type(e).__name__}: {e}")
            self.batches += 1
            return
        for j, c in zip(jobs, done):
            j.future.set_result(cut_at_stop(c, j.stop))
        secs = time.perf_counter() - t0
        gen = sum(c.completion_tokens for c in done)
        self.log(f"batch {self.batches}: {len(jobs)} requests, {sum(c.prompt_tokens for c in done)} prompt + "
                 f"{gen} generated tokens in {secs:.1f}s ({gen / secs:.1f} generated tok/s)")
        self.batches += 1


def cut_at_stop(c: Any, stop: list[str]) -> dict[str, Any]:
    """The completion, cut before the first of the request's stop strings (tokens after it are still counted:
    they were generated; their log-probs are not returned)."""
    text, reason = c.text, c.finish_reason
    logprobs = getattr(c, "logprobs", None)
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    if cuts:
        text, reason = text[: min(cuts)], "stop"
        logprobs = logprobs and cut_to_text(logprobs, len(text))
    return {"text": text, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "finish_reason": reason, "logprobs": logprobs}


def make_handler(engine: Any, served_name: str) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # one line per batch is enough
            pass

        def _send(self, status: int, obj: dict[str, Any]) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"error": {"message": message, "type": "invalid_request_error" if status < 500
                                          else "server_error"}})

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(200, {"object": "list", "data": [{"id": served_name, "object": "model",
                                                              "owned_by": "cowest"}]})
            elif self.path.rstrip("/") == "/health":
                self._send(200, engine.health())
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if len(raw) < length:
                self.close_connection = True
                return
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._error(404, f"no route {self.path}")
                return
            try:
                body = json.loads(raw or b"null")
                if not isinstance(body, dict):
                    raise BadRequest("the body must be a JSON object")
                job = Job(body)
                res = wait_for_answer(engine, job, engine.submit(job), self.connection)
            except ClientGone:
                self.close_connection = True
                return
            except (ValueError, TypeError) as e:  # BadRequest is a ValueError; so is malformed JSON
                self._error(400, str(e) if isinstance(e, BadRequest) else f"malformed request: {e}")
                return
            except Exception as e:  # noqa: BLE001
                self._error(500, f"generation failed: {type(e).__name__}: {e}")
                return
            text = res["text"]
            self._send(200, {
                "id": f"chatcmpl-cowest-{time.monotonic_ns()}", "object": "chat.completion", "created": int(time.time()),
                "model": served_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": openai_logprobs(res.get("logprobs")), "finish_reason": res["finish_reason"]}],
                "usage": {"prompt_tokens": res["prompt_tokens"], "completion_tokens": res["completion_tokens"],
                          "total_tokens": res["prompt_tokens"] + res["completion_tokens"]},
            })

    return Handler


class ClientGone(Exception):
    """The client closed its connection before the answer was ready."""


def wait_for_answer(engine: Any, job: Job, future: Future, conn: socket.socket, poll_s: float = 1.0) -> Any:
    """The job's result; if its client leaves first (a timeout, Ctrl-C), the engine drops the job and
    :class:`ClientGone` is raised. A client that times out and retries would otherwise leave its first request
    running beside the retry: at 64 in flight that doubled the load and made more requests time out, until most
    of the work was for answers nobody waited for (bench/RESULTS.md). llama.cpp's and vLLM's servers drop such
    requests too."""
    while True:
        try:
            return future.result(timeout=poll_s)
        except TimeoutError:
            if client_gone(conn):
                engine.cancel(job)
                raise ClientGone from None


def client_gone(conn: socket.socket) -> bool:
    """Whether the peer closed the connection (readable with nothing to read, or an error)."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default listen backlog of 5 drops a stage's burst of connections (1 s SYN retry)


def load_model(path: str, *, dtype: str, threads: int | None, max_batch: int, max_batch_tokens: int,
               n_ctx: int) -> Any:
    """The model as a :class:`WeakModel` (the batched decode loop), linears packed where that pays, or in int8
    (``dtype="int8"``: :mod:`cowest.models.int8`; the other layers as ``auto``)."""
    import torch

    from cowest.config import WeakConfig
    from cowest.models.weak import WeakModel

    int8 = dtype == "int8"
    cfg = WeakConfig(model=path, dtype="auto" if int8 else dtype, batch_size=max_batch,
                     max_batch_tokens=max_batch_tokens, max_prompt_tokens=n_ctx, threads=threads)
    wm = WeakModel.load(cfg)
    from cowest.models.per_request_attention import use_per_request_attention

    # the packed steps' attention per request: no products across requests (and, with int8's exact integer
    # products, rows that do not depend on their neighbours)
    use_per_request_attention()
    with torch.inference_mode():
        if int8:
            from cowest.models.int8 import quantize_linears

            linears = f"{quantize_linears(wm.model)} linear layers in int8"
        else:
            from cowest.models.packed import pack_linears

            linears = f"{pack_linears(wm.model, rows=max_batch)} linear layers packed for oneDNN"
    release_memory()  # glibc keeps freed memory otherwise (the tokenizer and load buffers)
    print(f"cowest: loaded {path} ({wm.model.dtype}, {torch.get_num_threads()} threads, {linears}, attention per "
          "request)", flush=True)
    return wm


def release_memory() -> None:
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        trim = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "malloc_trim", None)
    except OSError:
        trim = None
    if trim is not None:
        trim(0)


def main(argv: list[str] | None = None) -> None:
    p = server_parser("cowest's batched local strong-model server (OpenAI chat API)", "a transformers model directory")
    p.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32", "int8"),
                   help="as weak.dtype; int8: int8 linear layers (weights and activations), the rest as auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-batch", type=int, default=32, help="requests decoded together")
    p.add_argument("--max-batch-tokens", type=int, default=32768, help="rows x (prompt + new tokens) per batch")
    p.add_argument("--n-ctx", type=int, default=4096, help="longest prompt + max_tokens accepted")
    p.add_argument("--batching", choices=("continuous", "static"), default="continuous",
                   help="continuous: requests join the running batch (greedy ones; sampled ones go static)")
    p.add_argument("--kv-tokens", type=int, default=16384,
                   help="continuous: KV cache slots over all running requests (the memory bound)")
    args = p.parse_args(argv)
    model = load_model(args.model, dtype=args.dtype, threads=args.threads, max_batch=args.max_batch,
                       max_batch_tokens=args.max_batch_tokens, n_ctx=args.n_ctx)
    log = lambda s: print(s, flush=True)  # noqa: E731
    engine: Any = Engine(model, max_batch=args.max_batch, n_ctx=args.n_ctx, log=log)
    threading.Thread(target=engine.run_forever, name="cowest-engine", daemon=True).start()
    if args.batching == "continuous":
        from cowest.models.continuous import ContinuousEngine

        engine = ContinuousEngine(model, max_rows=args.max_batch, kv_tokens=args.kv_tokens, n_ctx=args.n_ctx,
                                  finish=cut_at_stop, fallback=engine, log=log).start()
    serve(engine, args, f"{args.batching} batching, max batch {args.max_batch}"
                        f"{f', KV budget {args.kv_tokens} tokens' if args.batching == 'continuous' else ''}")


def server_parser(description: str, model_help: str) -> argparse.ArgumentParser:
    """A server's command line with the flags :func:`serve` reads (--model, --host, --port, --served-name);
    each server adds its engine's own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--served-name", default=None)
    return p


def serve(engine: Any, args: argparse.Namespace, what: str) -> None:
    """Serve ``engine`` on ``args.host:args.port`` under ``args.served_name`` (default: the model's file name)
    until interrupted."""
    name = args.served_name or args.model.rstrip("/").rsplit("/", 1)[-1]
    srv = Server((args.host, args.port), make_handler(engine, name))
    print(f"cowest: serving {name} at http://{args.host}:{args.port}/v1 ({what})", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    sys.exit(main())
