"""Rate-limit buckets of keys gone quiet are forgotten (issue 19): the table follows the keys
active lately, not every user or address ever seen."""

from __future__ import annotations

import trio
import trio.testing

from chatd.domain.ratelimit import PRUNE_INTERVAL, RateLimiter


async def test_refilled_buckets_are_forgotten(mock_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(10.0, 5)
    for i in range(1000):
        assert limiter.take(f"user{i}") == 0.0
    assert len(limiter) == 1000
    await trio.sleep(PRUNE_INTERVAL)  # every bucket has refilled (5 tokens at 10/s)
    assert limiter.take("newcomer") == 0.0
    assert len(limiter) == 1


async def test_a_bucket_still_refilling_is_kept(mock_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(0.01, 2)  # 100 s per token
    assert limiter.take("busy") == 0.0
    assert limiter.take("busy") == 0.0
    assert limiter.take("busy") > 0  # empty
    await trio.sleep(PRUNE_INTERVAL)
    assert limiter.take("other") == 0.0
    assert len(limiter) == 2  # "busy" is not full again: forgetting it would reset its limit
    assert limiter.take("busy") > 0
