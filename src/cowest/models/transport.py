"""The strong client's transport: connection pools per event loop, the retryable-failure signal, ``Retry-After``,
and the crash watch of a server cowest started (a failed request to a watched endpoint asks whether the
process behind it still lives, so a crash is reported at once instead of retried)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class Retry(Exception):
    """A failed attempt that may succeed if repeated."""

    def __init__(self, reason: str, detail: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.status, self.retry_after = reason, detail, status, retry_after


_POOL_SIZE = 8  # connections per httpx pool: its bookkeeping is O(pool size) per request (encode/httpx#3215)


class LoopState:
    """Per event loop: ``n`` request slots over ceil(n/8) small httpx pools (slot k uses pool k // 8).

    Taking a slot is the concurrency bound, and no pool ever has more requests than connections."""

    def __init__(self, n: int, trust_env: bool, timeout_s: float):
        size = min(n, _POOL_SIZE)
        self.pools = [
            httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), trust_env=trust_env,
                              limits=httpx.Limits(max_connections=size, max_keepalive_connections=size))
            for _ in range(-(-n // size))
        ]
        self.slots: asyncio.Queue[int] = asyncio.Queue()
        for k in range(n):
            self.slots.put_nowait(k)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[httpx.AsyncClient]:
        k = await self.slots.get()
        try:
            yield self.pools[k // _POOL_SIZE]
        finally:
            self.slots.put_nowait(k)

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()


# endpoint -> a check that returns None while the process serving it lives, else one line on how it exited
WATCHES: dict[str, Callable[[float], str | None]] = {}


def watch_endpoint(base_url: str, check: Callable[[float], str | None]) -> Callable[[], None]:
    """Register the process behind ``base_url`` (``check(wait_s)``); returns the function that unregisters it.
    A failed request to a watched endpoint asks the check before any retry, so a crash is reported at once."""
    key = safe_endpoint(base_url)
    WATCHES[key] = check
    return lambda: WATCHES.pop(key, None) if WATCHES.get(key) is check else None


def safe_endpoint(url: str) -> str:
    """``url`` without user:password or query string (which may carry credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/")


def parse_logprobs(lp: object) -> list[dict] | None:
    """OpenAI's ``choices[0].logprobs.content`` (llama.cpp's server returns the same shape), compacted to
    ``{"token", "logprob", "top": [[token, logprob], ...]}`` per answer token; None if absent or malformed."""
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list):
        return None
    out = []
    for t in content:
        if not isinstance(t, dict) or not isinstance(t.get("token"), str):
            return None
        top = [[str(c["token"]), float(c["logprob"])] for c in t.get("top_logprobs") or []
               if isinstance(c, dict) and "token" in c and isinstance(c.get("logprob"), (int, float))]
        out.append({"token": t["token"], "logprob": float(t.get("logprob") or 0.0), "top": top})
    return out


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())
