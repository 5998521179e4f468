"""The strong model: an OpenAI-compatible chat client with cache, one retry layer and usage counts.

    usage = Usage()
    with StrongClient(cfg.strong, cache_path=run_dir / "strong_cache.sqlite", usage=usage) as client:
        results = client.chat_batch(
            [ChatRequest(messages=[...], sample_index=0), ...], tag="collab", desc="strong refine",
            on_result=lambda i, r: ...)       # called as each finishes (in completion order)
        r = await client.achat(ChatRequest(...), tag="judge")   # from async code
    results[i].text, results[i].cached, results[i].prompt_tokens
    usage.by_tag()["collab"] -> {"calls", "cached", "prompt_tokens", "completion_tokens", "retries",
                                 "retries_by_reason", "cost_usd"}

Talks to ``{base_url}/chat/completions`` with plain httpx: this module is the only retry layer.
Retried (exponential backoff, full jitter, ``Retry-After`` honoured): connection errors, timeouts,
408/409/429/5xx, HTML/malformed/truncated bodies and empty ``choices``. Other 4xx fail at once, and so does
any failure on an endpoint whose server process has exited (``watch_endpoint``: the managed llama.cpp
server), which raises :class:`~cowest.errors.ServerCrashed` naming how it exited.
The API key is read from the env var ``cfg.api_key_env`` per request and never stored or printed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import random
import re
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from tqdm.auto import tqdm

from cowest import __version__
from cowest.chat import Messages
from cowest.config import StrongConfig
from cowest.errors import ConfigError, ServerCrashed, StrongAPIError
from cowest.models.cache import ResponseCache, cache_key
from cowest.models.ratelimit import limiter_for
from cowest.models.transport import WATCHES as _WATCHES
from cowest.models.transport import (LOOPBACK, LoopState, Retry, parse_logprobs, parse_retry_after,  # noqa: F401
                                     safe_endpoint, watch_endpoint)  # re-exported: local_server registers its watch here
from cowest.models.usage import Usage

__all__ = ["ChatRequest", "ChatResult", "Messages", "StrongClient", "Usage", "watch_endpoint"]

@dataclass
class ChatRequest:
    messages: Messages
    sample_index: int = 0  # distinct samples of the same request are cached separately
    temperature: float | None = None  # None = cfg.temperature
    max_tokens: int | None = None  # None = cfg.max_tokens
    top_p: float | None = None  # None = not sent
    stop: list[str] | None = None  # None = not sent
    top_logprobs: int | None = None  # ask for each answer token's N most likely tokens; None = not asked


@dataclass
class ChatResult:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    # with ChatRequest.top_logprobs: one {"token", "logprob", "top": [[token, logprob], ...]} per answer token;
    # None when not asked for, or when the endpoint returned none
    logprobs: list[dict[str, Any]] | None = None


class StrongClient:
    """Chat completions against one endpoint; see the module docstring for the contract."""

    def __init__(
        self,
        cfg: StrongConfig,
        *,
        cache_path: str | Path | None = None,
        usage: Usage | None = None,
        progress: bool = True,
    ):
        if not re.match(r"^https?://", cfg.base_url or ""):
            raise ConfigError(f"strong.base_url must start with http:// or https://, got {cfg.base_url!r}")
        self.cfg = cfg
        self.endpoint = safe_endpoint(cfg.base_url)  # for messages only
        self._url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.usage = usage if usage is not None else Usage()
        self.progress = progress
        path = cache_path if cache_path is not None else cfg.cache_path
        self.cache = ResponseCache(path) if (cfg.cache and path) else None
        self._limiter = limiter_for(self.endpoint, cfg.rpm, cfg.tpm)
        self._trust_env = (urlsplit(cfg.base_url).hostname or "") not in LOOPBACK  # no proxy for loopback
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopState] = weakref.WeakKeyDictionary()
        self._states_lock = threading.Lock()

    # -- public API ------------------------------------------------------------------------------
    def chat_batch(
        self,
        requests: Sequence[ChatRequest],
        *,
        tag: str | Sequence[str],
        desc: str | None = None,
        on_result: Callable[[int, ChatResult], None] | None = None,
    ) -> list[ChatResult]:
        """Run ``requests`` concurrently; results in request order. Raises StrongAPIError on a final failure
        (results finished before it stay cached).

        ``tag`` names the usage line each call counts under: one for the batch, or one per request (a batch
        that mixes systems). Requests are sent in the order given: put those that share a prompt prefix next
        to each other, and a server that keeps its last prompt's KV cache (llama.cpp) reads the prefix once."""
        requests = list(requests)
        if not requests:
            return []
        tags = [tag] * len(requests) if isinstance(tag, str) else list(tag)
        if len(tags) != len(requests):
            raise ValueError(f"chat_batch: {len(tags)} tags for {len(requests)} requests")
        run = lambda: asyncio.run(self._batch_own_loop(requests, tags, desc, on_result))  # noqa: E731
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return run()
        # Called from inside a running loop (a notebook, an async app): use a worker thread's loop.
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cowest-strong") as ex:
            return ex.submit(run).result()

    async def achat(self, request: ChatRequest, *, tag: str) -> ChatResult:
        """One request from async code (the running loop's own connection pool and concurrency bound)."""
        hit = self._cached(request, tag)
        if hit is not None:
            return hit
        return await self._fetch(request, tag)

    def close(self) -> None:
        """Close the cache and any idle connection pools. Idempotent."""
        with self._states_lock:
            states = list(self._states.items())
            self._states.clear()
        for loop, st in states:
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(st.aclose())
        if self.cache is not None:
            self.cache.close()

    async def aclose(self) -> None:
        await self._drop_state()
        self.close()

    def __enter__(self) -> "StrongClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> "StrongClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"StrongClient(endpoint={self.endpoint!r}, model={self.cfg.model!r}, cache={self.cache!r})"

    # -- batch machinery -------------------------------------------------------------------------
    async def _batch_own_loop(self, requests, tags, desc, on_result) -> list[ChatResult]:
        try:
            return await self._batch(requests, tags, desc, on_result)
        finally:
            await self._drop_state()  # asyncio.run closes this loop next; its pool goes with it

    async def _batch(self, requests: list[ChatRequest], tags: list[str], desc: str | None, on_result) -> list[ChatResult]:
        results: list[ChatResult | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc=desc or tags[0], unit="req", disable=not self.progress, dynamic_ncols=True)
        try:
            pending = []
            for i, req in enumerate(requests):
                hit = self._cached(req, tags[i])
                if hit is None:
                    pending.append(i)
                    continue
                results[i] = hit
                bar.update(1)
                if on_result:
                    on_result(i, hit)

            async def one(i: int) -> tuple[int, ChatResult]:
                return i, await self._fetch(requests[i], tags[i])

            tasks = [asyncio.ensure_future(one(i)) for i in pending]
            try:
                for fut in asyncio.as_completed(tasks):
                    i, res = await fut
                    results[i] = res
                    bar.update(1)
                    if on_result:
                        on_result(i, res)
            except BaseException:
                # Fail fast: stop the rest; everything finished so far is already in the cache.
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        finally:
            bar.close()
        return results  # type: ignore[return-value]

    def _state(self) -> LoopState:
        loop = asyncio.get_running_loop()
        with self._states_lock:
            st = self._states.get(loop)
            if st is None:
                st = self._states[loop] = LoopState(self.cfg.max_concurrency, self._trust_env, self.cfg.timeout_s)
            return st

    async def _drop_state(self) -> None:
        loop = asyncio.get_running_loop()
        with self._states_lock:
            st = self._states.pop(loop, None)
        if st is not None:
            await st.aclose()

    # -- one request -----------------------------------------------------------------------------
    def _params(self, req: ChatRequest) -> dict[str, Any]:
        p: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": req.messages,
            "temperature": self.cfg.temperature if req.temperature is None else req.temperature,
            "max_tokens": self.cfg.max_tokens if req.max_tokens is None else req.max_tokens,
        }
        if req.top_p is not None:
            p["top_p"] = req.top_p
        if req.stop is not None:
            p["stop"] = req.stop
        if req.top_logprobs is not None:
            p["logprobs"] = True
            p["top_logprobs"] = req.top_logprobs
        return p

    def _key(self, req: ChatRequest) -> str:
        return cache_key(sample_index=req.sample_index, **self._params(req))

    def _cached(self, req: ChatRequest, tag: str) -> ChatResult | None:
        if self.cache is None:
            return None
        hit = self.cache.get(self._key(req))
        if hit is None:
            return None
        self.usage.record_call(tag, cached=True)
        return ChatResult(text=hit["text"], prompt_tokens=hit.get("prompt_tokens", 0),
                          completion_tokens=hit.get("completion_tokens", 0), cached=True, logprobs=hit.get("logprobs"))

    async def _fetch(self, req: ChatRequest, tag: str) -> ChatResult:
        body = self._params(req)
        st = self._state()
        est_tokens = sum(len(str(m.get("content", ""))) for m in req.messages) // 4 + body["max_tokens"]
        attempts = self.cfg.max_retries + 1
        last: Retry | None = None
        for attempt in range(attempts):
            if self._limiter is not None:
                await self._limiter.acquire(est_tokens)
            try:
                async with st.slot() as http:
                    result = await self._attempt(http, body)
            except Retry as e:
                last = e
                await self._raise_if_crashed(e)
                if attempt + 1 >= attempts:
                    break
                self.usage.record_retry(tag, e.reason)
                await asyncio.sleep(self._backoff(attempt, e.retry_after))
                continue
            if self.cache is not None:
                entry = {"text": result.text, "prompt_tokens": result.prompt_tokens,
                         "completion_tokens": result.completion_tokens}
                if result.logprobs is not None:
                    entry["logprobs"] = result.logprobs
                self.cache.put(self._key(req), entry)
            cost = (result.prompt_tokens * self.cfg.price_prompt_per_1k
                    + result.completion_tokens * self.cfg.price_completion_per_1k) / 1000
            self.usage.record_call(tag, prompt_tokens=result.prompt_tokens,
                                   completion_tokens=result.completion_tokens, cost_usd=cost)
            return result
        assert last is not None
        raise StrongAPIError(
            f"strong model at {self.endpoint} failed after {attempts} attempt(s); last error: {last.detail}",
            endpoint=self.endpoint, status=last.status,
        )

    async def _raise_if_crashed(self, e: Retry) -> None:
        check = _WATCHES.get(self.endpoint)
        if check is None:
            return
        # A server that died mid-request resets the connection before it can be reaped: give it a moment.
        crashed = await asyncio.to_thread(check, 2.0 if e.reason == "connect" else 0.0)
        if crashed:
            raise ServerCrashed(crashed, endpoint=self.endpoint, status=e.status)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = self.cfg.backoff_max_s
        if retry_after is not None:
            return min(retry_after, cap)
        return random.uniform(0, min(cap, self.cfg.backoff_base_s * (2**attempt)))  # full jitter

    def _headers(self) -> dict[str, str]:
        h = {"User-Agent": f"cowest/{__version__}", "Accept": "application/json"}
        key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    async def _attempt(self, http: httpx.AsyncClient, body: dict[str, Any]) -> ChatResult:
        timeout = self.cfg.timeout_s
        try:
            resp = await asyncio.wait_for(http.post(self._url, json=body, headers=self._headers()), timeout)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise Retry("timeout", f"no answer within {timeout:g}s") from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
            raise StrongAPIError(f"strong model at {self.endpoint}: bad URL: {self._scrub(str(e))}",
                                 endpoint=self.endpoint) from None
        except httpx.TransportError as e:
            raise Retry("connect", f"connection failed ({type(e).__name__}: {self._scrub(str(e)) or 'no detail'})") from None
        status = resp.status_code
        if status >= 400:
            message = self._server_message(resp)
            if status in (408, 409, 429) or status >= 500:
                raise Retry(str(status), f"HTTP {status}: {message}", status=status,
                             retry_after=parse_retry_after(resp.headers.get("Retry-After")))
            raise StrongAPIError(
                f"strong model at {self.endpoint} refused the request (HTTP {status}, not retried): {message}"
                + self._hint(status), endpoint=self.endpoint, status=status)
        return self._parse(resp)

    def _parse(self, resp: httpx.Response) -> ChatResult:
        ctype = resp.headers.get("Content-Type", "")
        raw = resp.content
        if "html" in ctype.lower() or raw.lstrip()[:1] == b"<":
            raise Retry("bad_body", f"the endpoint answered HTML ({ctype or 'no content-type'}), not JSON; "
                         "is base_url the API root (e.g. http://host:port/v1)?", status=resp.status_code)
        try:
            data = json.loads(raw)
        except ValueError:
            raise Retry("bad_body", f"malformed or truncated JSON body ({len(raw)} bytes, {ctype or 'no content-type'})",
                         status=resp.status_code) from None
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices:
            err = data.get("error") if isinstance(data, dict) else None
            detail = f": {self._scrub(json.dumps(err))[:300]}" if err else ""
            raise Retry("bad_body", f"response has no choices{detail}", status=resp.status_code)
        first = choices[0] if isinstance(choices[0], dict) else {}
        message = first.get("message")
        if not isinstance(message, dict):
            raise Retry("bad_body", "response choice has no message", status=resp.status_code)
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return ChatResult(
            text=str(message.get("content") or ""),
            prompt_tokens=_int(usage.get("prompt_tokens")),
            completion_tokens=_int(usage.get("completion_tokens")),
            logprobs=parse_logprobs(first.get("logprobs")),
        )

    # -- error text ------------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
        if key:
            text = text.replace(key, "***")
        return re.sub(r"(sk-|Bearer\s+)[A-Za-z0-9._\-]{6,}", r"\1***", text)

    def _server_message(self, resp: httpx.Response) -> str:
        try:
            data = resp.json()
            err = data.get("error", data) if isinstance(data, dict) else data
            msg = err.get("message", err) if isinstance(err, dict) else err
            text = msg if isinstance(msg, str) else json.dumps(msg)
        except ValueError:
            text = resp.text
            if "html" in resp.headers.get("Content-Type", "").lower():
                text = "(an HTML page) " + re.sub(r"<[^>]+>", " ", text)
        text = " ".join(self._scrub(text).split())
        return (text[:300] + "…") if len(text) > 300 else (text or resp.reason_phrase)

    def _hint(self, status: int) -> str:
        if status in (401, 403):
            env = self.cfg.api_key_env
            if not env:
                return " (strong.api_key_env is unset, so no key was sent)"
            if not os.environ.get(env):
                return f" (the environment variable {env} is not set, so no key was sent)"
            return f" (check the key in the environment variable {env})"
        if status == 404:
            return f" (check strong.base_url, usually ending in /v1, and strong.model={self.cfg.model!r})"
        return ""


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0
