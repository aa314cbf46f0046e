"""The per-key token bucket on a real Redis, shared by two clients as by two workers.

Counts, not timings: a burst is sent at a rate so low that no whole token can refill while it
is in flight, and refill is checked against Redis's own clock, which every decision reports.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from riskstream.adapters.rate_limit import RateDecision, RedisRateLimiter
from riskstream.core.errors import RateLimited


@pytest.fixture
async def workers(redis_url: str, key_prefix: str) -> AsyncIterator[list[RedisRateLimiter]]:
    """Two limiters, each with its own connection pool, like two worker processes."""
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    yield [RedisRateLimiter(client, prefix=key_prefix) for client in clients]
    for client in clients:
        await client.aclose()


async def test_a_burst_gets_exactly_the_bucket_across_workers(
    workers: list[RedisRateLimiter],
) -> None:
    burst, extra = 25, 15
    # 0.01 events/s: a whole token would take 100 s to refill
    decisions = await asyncio.gather(
        *(workers[i % 2].take("k1", cost=1, rate=0.01, burst=burst) for i in range(burst + extra))
    )
    assert sum(d.allowed for d in decisions) == burst
    refused = [d for d in decisions if not d.allowed]
    assert len(refused) == extra
    for d in refused:
        assert 0 < d.retry_after_s <= 100
        assert d.retry_after == pytest.approx(d.retry_after_s, abs=1)
    # another key has its own bucket
    assert (await workers[0].take("k2", cost=1, rate=0.01, burst=burst)).allowed


async def test_bulk_requests_take_one_token_per_event(workers: list[RedisRateLimiter]) -> None:
    first = await workers[0].take("bulk", cost=7, rate=0.01, burst=10)
    assert first.allowed
    assert first.remaining == pytest.approx(3, abs=0.01)
    refused = await workers[1].take("bulk", cost=4, rate=0.01, burst=10)
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(100, abs=2)  # one token missing at 0.01/s
    assert (await workers[1].take("bulk", cost=3, rate=0.01, burst=10)).allowed


async def test_a_request_bigger_than_the_burst_leaves_a_debt(
    workers: list[RedisRateLimiter],
) -> None:
    big = await workers[0].take("debt", cost=25, rate=0.1, burst=10)
    assert big.allowed  # a full bucket lets the largest bulk request through ...
    assert big.remaining == pytest.approx(-15, abs=0.01)
    with pytest.raises(RateLimited) as caught:  # ... and the key then waits it off
        await workers[1].check("debt", cost=1, rate=0.1, burst=10)
    assert caught.value.status == 429
    assert caught.value.code == "rate_limited"
    assert 155 <= caught.value.retry_after <= 161
    assert "'debt'" in caught.value.message
    again = await workers[1].take("debt", cost=25, rate=0.1, burst=10)
    assert not again.allowed
    assert again.retry_after_s == pytest.approx(250, abs=2)  # until the bucket is full again


async def test_refill_follows_the_rate_on_the_server_clock(
    workers: list[RedisRateLimiter],
) -> None:
    rate, burst = 40.0, 5
    while (await workers[0].take("refill", cost=1, rate=rate, burst=burst)).allowed:
        pass  # empty the bucket
    decisions: list[RateDecision] = []
    for i in range(400):  # bounded; ~1 s of polling from two workers in turn
        decisions.append(await workers[i % 2].take("refill", cost=1, rate=rate, burst=burst))
        if decisions[-1].server_time - decisions[0].server_time >= 1.0:
            break
        await asyncio.sleep(0.002)
    elapsed = decisions[-1].server_time - decisions[0].server_time
    allowed = sum(d.allowed for d in decisions)
    assert allowed >= 10  # tokens did come back
    # every token that came back in that time went out, and no more (the first decision
    # could still hold a fraction of a token, hence the 1)
    assert abs(allowed - rate * elapsed) <= 1 + 1e-6
    # and each decision is the bucket's arithmetic, step by step
    # (server_time is float epoch seconds: ~0.2 µs apart from the script's own microseconds,
    # so the re-derived tokens carry ~1e-5 of rounding at this rate; a decision that close to
    # a whole token is not judged)
    for before, after in itertools.pairwise(decisions):
        tokens = min(burst, before.remaining + (after.server_time - before.server_time) * rate)
        if abs(tokens - 1) > 1e-4:
            assert after.allowed == (tokens >= 1)
        assert after.remaining == pytest.approx(tokens - after.allowed, abs=1e-4)


async def test_an_idle_bucket_refills_to_the_burst_and_no_more(
    workers: list[RedisRateLimiter], redis_url: str, key_prefix: str
) -> None:
    rate, burst = 100.0, 5
    for _ in range(burst):
        assert (await workers[0].take("idle", cost=1, rate=rate, burst=burst)).allowed
    await asyncio.sleep(0.2)  # 20 tokens' worth
    after = await workers[1].take("idle", cost=1, rate=rate, burst=burst)
    assert after.allowed
    assert after.remaining == pytest.approx(burst - 1, abs=1e-6)
    # the bucket key expires once it would be full again, the state a missing key stands for
    client = aioredis.Redis.from_url(redis_url)
    try:
        ttl_ms = await client.pttl(workers[0].bucket_key("idle"))
    finally:
        await client.aclose()
    assert 0 < ttl_ms <= 1000 + 10 + 1


async def test_arguments_are_checked(workers: list[RedisRateLimiter]) -> None:
    for cost, rate, burst in [(0, 1.0, 1), (1, 0.0, 1), (1, 1.0, 0)]:
        with pytest.raises(ValueError):
            await workers[0].take("args", cost=cost, rate=rate, burst=burst)


async def test_gathered_takes_decide_exactly_as_one_by_one(
    workers: list[RedisRateLimiter], redis_url: str
) -> None:
    """``check`` gathers a turn's takes into one script call: same decisions, in order, with
    the same bucket named many times and other buckets between."""
    costs = [1, 3, 1, 2, 5, 1, 1, 4, 1, 1]
    rate, burst = 0.0001, 8
    gathered = await asyncio.gather(
        *(workers[0].take_gathered("g1", cost=c, rate=rate, burst=burst) for c in costs),
        *(workers[0].take_gathered("g2", cost=1, rate=rate, burst=burst) for _ in range(3)),
    )
    one_by_one = [await workers[1].take("s1", cost=c, rate=rate, burst=burst) for c in costs]
    assert [d.allowed for d in gathered[: len(costs)]] == [d.allowed for d in one_by_one]
    assert [d.allowed for d in gathered[: len(costs)]] == [
        True, True, True, True, False, True, False, False, False, False,
    ]  # fmt: skip
    assert all(d.allowed for d in gathered[len(costs) :])  # g2: a bucket of its own
    with pytest.raises(RateLimited) as refused:
        await workers[0].check("g1", cost=1, rate=rate, burst=burst)
    assert refused.value.retry_after >= 1
