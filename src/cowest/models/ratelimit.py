"""Requests-per-minute and tokens-per-minute limits: an async token bucket per endpoint.

The bucket's state is guarded by a threading lock and waiting uses ``asyncio.sleep``, so one limiter
serves every event loop in the process (``chat_batch`` runs a fresh loop per call).
"""

from __future__ import annotations

import asyncio
import threading
import time


class TokenBucket:
    """Refills ``rate_per_min`` units per minute up to a burst of ``rate_per_min`` (one minute's worth)."""

    def __init__(self, rate_per_min: float):
        if rate_per_min <= 0:
            raise ValueError(f"rate must be > 0, got {rate_per_min}")
        self.capacity = float(rate_per_min)
        self.rate_per_s = rate_per_min / 60.0
        self._level = self.capacity
        self._t = time.monotonic()
        self._lock = threading.Lock()

    def _reserve(self, amount: float) -> float:
        """Take ``amount`` now (may go negative) and return how long to wait for it to be covered."""
        amount = min(float(amount), self.capacity)  # a request bigger than the bucket must still pass
        with self._lock:
            now = time.monotonic()
            self._level = min(self.capacity, self._level + (now - self._t) * self.rate_per_s)
            self._t = now
            self._level -= amount
            return 0.0 if self._level >= 0 else -self._level / self.rate_per_s

    async def acquire(self, amount: float = 1.0) -> float:
        """Wait until ``amount`` units are available; returns the seconds waited."""
        wait = self._reserve(amount)
        if wait > 0:
            await asyncio.sleep(wait)
        return wait


class RateLimiter:
    """Optional rpm and tpm buckets; ``acquire(tokens)`` waits for both."""

    def __init__(self, rpm: int | None = None, tpm: int | None = None):
        self.rpm = TokenBucket(rpm) if rpm else None
        self.tpm = TokenBucket(tpm) if tpm else None

    async def acquire(self, tokens: int = 0) -> float:
        waited = 0.0
        if self.rpm is not None:
            waited += await self.rpm.acquire(1)
        if self.tpm is not None and tokens > 0:
            waited += await self.tpm.acquire(tokens)
        return waited


_REGISTRY: dict[tuple[str, int | None, int | None], RateLimiter] = {}
_REGISTRY_LOCK = threading.Lock()


def limiter_for(endpoint: str, rpm: int | None, tpm: int | None) -> RateLimiter | None:
    """The process-wide limiter of one endpoint (shared by every client that talks to it)."""
    if not rpm and not tpm:
        return None
    key = (endpoint.rstrip("/"), rpm, tpm)
    with _REGISTRY_LOCK:
        if key not in _REGISTRY:
            _REGISTRY[key] = RateLimiter(rpm, tpm)
        return _REGISTRY[key]
