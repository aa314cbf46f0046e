"""The per-key token bucket on a real Redis, shared by two clients as by two workers, and the
tokens each worker leases from it (``TokenLeases``).

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
from riskstream.core.ports import BucketTake
from riskstream.core.rate_leases import TokenLeases


@pytest.fixture
def calls() -> list[list[str]]:
    """The script calls each of the two ``workers`` made (through their ``observe`` hooks)."""
    return [[], []]


@pytest.fixture
async def workers(
    redis_url: str, key_prefix: str, calls: list[list[str]]
) -> AsyncIterator[list[RedisRateLimiter]]:
    """Two limiters, each with its own connection pool, like two worker processes."""
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    yield [
        RedisRateLimiter(
            client, prefix=key_prefix, observe=lambda op, _, made=made: made.append(op)
        )
        for client, made in zip(clients, calls)
    ]
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
        await TokenLeases(workers[1], lease_s=0.1).check("debt", cost=1, rate=0.1, burst=10)
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
    with pytest.raises(ValueError):
        await workers[0].take_many([BucketTake("args", 1, give_back=-1)], rate=1.0, burst=1)


async def test_takes_in_one_call_decide_exactly_as_one_by_one(
    workers: list[RedisRateLimiter],
) -> None:
    """One script call with the same bucket named many times and another bucket between: the
    same decisions, in order, as one call per take."""
    costs = [1, 3, 1, 2, 5, 1, 1, 4, 1, 1]
    rate, burst = 0.0001, 8
    takes = [BucketTake("g1", c) for c in costs[:5]] + [BucketTake("g2", 1)] * 3
    takes += [BucketTake("g1", c) for c in costs[5:]]
    together = await workers[0].take_many(takes, rate=rate, burst=burst)
    g1 = [d.allowed for t, d in zip(takes, together) if t.bucket == "g1"]
    one_by_one = [await workers[1].take("s1", cost=c, rate=rate, burst=burst) for c in costs]
    assert g1 == [d.allowed for d in one_by_one]
    assert g1 == [True, True, True, True, False, True, False, False, False, False]
    assert all(d.allowed for t, d in zip(takes, together) if t.bucket == "g2")  # its own bucket
    assert all(d.leased == 0 for d in together)  # none asked


async def test_a_take_gives_back_then_takes_then_leases_whole_tokens(
    workers: list[RedisRateLimiter],
) -> None:
    rate, burst = 0.0001, 10
    first = await workers[0].take_many([BucketTake("l", 2, lease=5)], rate=rate, burst=burst)
    assert first[0].allowed and first[0].leased == 5
    assert first[0].remaining == pytest.approx(3, abs=0.01)
    # a lease never takes more than whole tokens that are there, nor from a refused take
    [short, refused] = await workers[1].take_many(
        [BucketTake("l", 1, lease=5), BucketTake("l", 1, lease=5)], rate=rate, burst=burst
    )
    assert short.allowed and short.leased == 2 and short.remaining == pytest.approx(0, abs=0.01)
    assert not refused.allowed and refused.leased == 0
    # what comes back is there for the next take, in the same call, but never past the burst
    [back] = await workers[0].take_many([BucketTake("l", 1, give_back=4)], rate=rate, burst=burst)
    assert back.allowed and back.remaining == pytest.approx(3, abs=0.01)
    [full] = await workers[0].take_many([BucketTake("l", 0, give_back=50)], rate=rate, burst=burst)
    assert full.allowed and full.remaining == pytest.approx(burst, abs=0.01)


class Clock:
    """The leases' clock, moved by hand: leases expire when the test says, not when the machine
    is slow."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_worker_asks_the_bucket_once_per_chunk(
    workers: list[RedisRateLimiter], calls: list[list[str]]
) -> None:
    leases = TokenLeases(workers[0], lease_s=0.1, clock=Clock())
    rate, burst = 1000.0, 5000
    assert leases.chunk(rate, burst) == 100
    # 300 requests of one turn: one call takes their 300 tokens and leases 100 more
    await asyncio.gather(*(leases.check("c", cost=1, rate=rate, burst=burst) for _ in range(300)))
    assert len(calls[0]) == 1
    assert leases.held("c", rate=rate, burst=burst) == 100
    for _ in range(100):  # spent here, no call
        await leases.check("c", cost=1, rate=rate, burst=burst)
    assert len(calls[0]) == 1
    for _ in range(1010):  # each call: one take and a lease of 100
        await leases.check("c", cost=1, rate=rate, burst=burst)
    assert len(calls[0]) == 1 + 10
    # a bulk request larger than the lease asks the bucket, giving the leftovers back first
    await leases.check("c", cost=1000, rate=rate, burst=burst)
    assert len(calls[0]) == 12
    assert leases.held("c", rate=rate, burst=burst) == 100


async def test_leased_tokens_are_refused_elsewhere_at_most_a_chunk_per_worker_then_come_back(
    workers: list[RedisRateLimiter],
) -> None:
    """The bound leasing adds (docs/auth.md): while worker A holds a lease, worker B can be
    refused with up to a chunk of the key's tokens in A; once A's lease expires and is given
    back, B gets them, and the two together got the burst exactly, no token lost or added."""
    clock = Clock()
    a, b = (TokenLeases(worker, lease_s=1000, clock=clock) for worker in workers)
    rate, burst = 0.01, 25  # a token in 100 s: none comes back during the test
    chunk = a.chunk(rate, burst)
    assert chunk == 10

    async def spend(worker: TokenLeases) -> int:
        allowed = 0
        while True:
            try:
                await worker.check("k", cost=1, rate=rate, burst=burst)
            except RateLimited:
                return allowed
            allowed += 1

    await a.check("k", cost=1, rate=rate, burst=burst)
    assert a.held("k", rate=rate, burst=burst) == chunk
    got = await spend(b)
    assert got == burst - 1 - chunk  # refused while A holds a chunk, and only that
    assert b.held("k", rate=rate, burst=burst) == 0
    assert await a.sweep() == 0  # not expired: A keeps it
    clock.now += 1000
    assert await a.sweep() == chunk  # expired: back to the bucket
    assert a.held("k", rate=rate, burst=burst) == 0
    assert await spend(b) == chunk
    assert 1 + got + chunk == burst


async def test_a_lease_is_not_spent_after_it_expires(
    workers: list[RedisRateLimiter], calls: list[list[str]]
) -> None:
    clock = Clock()
    leases = TokenLeases(workers[0], lease_s=100, clock=clock)
    rate, burst = 0.05, 6  # chunk 5; a token in 20 s
    await leases.check("x", cost=1, rate=rate, burst=burst)
    assert leases.held("x", rate=rate, burst=burst) == 5
    clock.now += 100
    # the next take gives the 5 back, takes 1 and leases the 4 left: the same count either way
    await leases.check("x", cost=1, rate=rate, burst=burst)
    assert len(calls[0]) == 2
    assert leases.held("x", rate=rate, burst=burst) == 4
    for _ in range(4):
        await leases.check("x", cost=1, rate=rate, burst=burst)
    with pytest.raises(RateLimited):
        await leases.check("x", cost=1, rate=rate, burst=burst)
    # and another worker's view of the bucket agrees: nothing left, nothing held
    assert leases.held("x", rate=rate, burst=burst) == 0
    assert not (await workers[1].take("x", cost=1, rate=rate, burst=burst)).allowed


async def test_close_gives_every_lease_back(workers: list[RedisRateLimiter]) -> None:
    leases = TokenLeases(workers[0], lease_s=1000, clock=Clock())
    rate, burst = 0.01, 30
    for bucket in ("p", "q"):
        await leases.check(bucket, cost=1, rate=rate, burst=burst)
    assert await leases.close() == 2 * 10
    for bucket in ("p", "q"):
        decision = await workers[1].take(bucket, cost=1, rate=rate, burst=burst)
        assert decision.remaining == pytest.approx(burst - 2, abs=0.01)
