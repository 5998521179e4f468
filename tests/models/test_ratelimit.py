"""Token buckets: a full minute's burst passes at once, then callers wait for the refill."""

from __future__ import annotations

import asyncio
import time

from cowest.models.ratelimit import RateLimiter, TokenBucket, limiter_for


def test_bucket_burst_then_wait():
    async def main():
        b = TokenBucket(600)  # 10 per second, burst 600
        t = time.monotonic()
        assert await b.acquire(600) == 0.0
        waited = await b.acquire(5)  # bucket empty: 5 units take ~0.5 s
        return waited, time.monotonic() - t

    waited, elapsed = asyncio.run(main())
    assert 0.4 <= waited <= 0.6 and elapsed >= 0.4


def test_limiter_rpm_spaces_requests():
    async def main():
        lim = RateLimiter(rpm=1200)  # 20 per second
        await lim.rpm.acquire(1200)  # use up the burst
        t = time.monotonic()
        await asyncio.gather(*(lim.acquire() for _ in range(4)))
        return time.monotonic() - t

    assert 0.15 <= asyncio.run(main()) <= 0.5  # 4 requests at 20/s


def test_oversized_request_does_not_deadlock():
    async def main():
        return await RateLimiter(tpm=60_000).acquire(10**9)

    assert asyncio.run(main()) == 0.0


def test_registry_shares_per_endpoint():
    assert limiter_for("http://a/v1", None, None) is None
    a = limiter_for("http://a/v1", 60, None)
    assert limiter_for("http://a/v1/", 60, None) is a
    assert limiter_for("http://b/v1", 60, None) is not a
