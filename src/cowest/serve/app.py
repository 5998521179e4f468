"""The ASGI app behind ``cowest serve`` (Starlette): routes, auth, admission control, body limits.

    app = build_app(cfg, weak, strong_client, ServeOptions(max_concurrency=4))
    # POST /v1/chat/completions, GET /v1/models, GET /health

Admission: at most ``max_concurrency`` collaborations run at once and ``max_queue`` more wait; a
request beyond that is refused at once with 429 (and ``Retry-After``) rather than queued without
bound. Bodies over ``max_body_bytes`` get 413 before they are read in full.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cowest.config import RunConfig
from cowest.errors import StrongAPIError
from cowest.serve.collab import Collaborator, GenericTask
from cowest.serve.protocol import ApiError, completion_body, parse_request, sse_chunks


@dataclass
class ServeOptions:
    model_name: str | None = None  # the id clients send as `model`; None = the run's name
    api_key: str | None = None  # the bearer key itself (read from the env by the CLI); None = no auth
    max_concurrency: int = 8  # collaborations in progress at once
    max_queue: int = 32  # more requests that may wait for a slot; beyond that: 429
    max_body_bytes: int = 1 << 20
    show_draft: bool = False  # return the draft with every response (else only when asked)
    use_task: bool = True  # the run's task instruction around the question; False = generic prompt
    gate: Any = None  # a calibrated cowest.inference.gate.Gate: confident drafts answered by the weak model alone


class _Admission:
    """Counts requests in the building; hands out ``limit`` running slots."""

    def __init__(self, limit: int, queue: int):
        self.limit, self.capacity = limit, limit + queue
        self.inside = 0
        self.sem = asyncio.Semaphore(limit)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.inside >= self.capacity:
            raise ApiError(429, f"server busy: {self.inside} requests in progress or queued; retry shortly",
                           type_="rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": "1"})
        self.inside += 1
        try:
            async with self.sem:
                yield
        finally:
            self.inside -= 1


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed ``limit`` bytes."""
    too_big = ApiError(413, f"request body exceeds {limit} bytes", code="request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(
    cfg: RunConfig,
    weak: Any,
    strong: Any,
    options: ServeOptions | None = None,
    *,
    on_shutdown: list[Callable[[], Any]] | None = None,
) -> Starlette:
    """The app serving ``weak`` (draft) + ``strong`` (refine, a StrongClient) as one model.

    ``on_shutdown`` callables run after the last in-flight request has finished (e.g. stopping a
    managed llama.cpp server).
    """
    opts = options or ServeOptions()
    model_name = opts.model_name or cfg.name
    task: Any = GenericTask()
    if opts.use_task:
        from cowest.tasks import get_task

        task = get_task(cfg.task)
    collab = Collaborator(weak, strong, task=task, fmt=cfg.task.format, max_batch=cfg.weak.batch_size,
                          max_new_tokens=cfg.weak.max_new_tokens, temperature=cfg.weak.temperature,
                          top_p=cfg.weak.top_p, gate=opts.gate,
                          agreement=(cfg.gate.agreement_k, cfg.gate.agreement_temperature), seed=cfg.seed)
    admission = _Admission(opts.max_concurrency, opts.max_queue)
    started = int(time.time())

    def check_auth(request: Request) -> None:
        if opts.api_key is None:
            return
        got = request.headers.get("authorization", "")
        scheme, _, token = got.partition(" ")
        # constant-time compare: the key must not leak through response timing
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), opts.api_key.encode()):
            raise ApiError(401, "missing or incorrect API key (send 'Authorization: Bearer <key>')",
                           type_="authentication_error", code="invalid_api_key")

    async def chat(request: Request) -> Response:
        try:
            check_auth(request)
            req = parse_request(await read_body(request, opts.max_body_bytes))
            if req.model != model_name:
                raise ApiError(404, f"model {req.model!r} does not exist; this server serves {model_name!r}",
                               param="model", code="model_not_found")
            question = req.question()
            async with admission.slot():
                reply = await collab.answer(
                    question, temperature=req.temperature, top_p=req.top_p,
                    max_tokens=req.max_completion_tokens or req.max_tokens, stop=req.stop_list(),
                )
        except ApiError as e:
            return error_response(e)
        except ClientDisconnect:
            return Response(status_code=499)
        except StrongAPIError as e:
            return error_response(ApiError(502, f"strong model failed: {e}", type_="upstream_error",
                                           code="strong_model_error"))
        with_draft = opts.show_draft or req.cowest.return_draft
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            chunks = sse_chunks(reply, model_name, with_draft=with_draft, include_usage=include_usage)
            return StreamingResponse(iter(chunks), media_type="text/event-stream")
        return JSONResponse(completion_body(reply, model_name, with_draft=with_draft))

    async def models(request: Request) -> Response:
        try:
            check_auth(request)
        except ApiError as e:
            return error_response(e)
        return JSONResponse({"object": "list", "data": [
            {"id": model_name, "object": "model", "created": started, "owned_by": "cowest"}]})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": model_name, "in_progress": admission.inside,
                             "weak_batches": len(collab.batcher.batches)})

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(ApiError(404, f"no route {request.method} {request.url.path}"))

    async def bad_method(request: Request, exc: Exception) -> Response:
        return error_response(ApiError(405, f"method {request.method} not allowed on {request.url.path}"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        # uvicorn runs this after in-flight requests have finished
        await collab.aclose()
        aclose = getattr(strong, "aclose", None)
        if aclose is not None:
            await aclose()  # this loop's connection pool goes with the loop
        for fn in on_shutdown or []:
            fn()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: bad_method},
        lifespan=lifespan,
    )
    app.state.collab = collab
    app.state.admission = admission
    app.state.model_name = model_name
    return app
