"""Tokens leased from the shared bucket (``riskstream.core.rate_leases``), over an in-memory
bucket with the Lua script's arithmetic and a fake clock: how often the bucket is asked, and
the bound leasing puts on exactness, counted over simulated traffic of several workers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest
from riskstream.core.errors import RateLimited, Unavailable
from riskstream.core.rate_leases import TokenLeases

from tests.unit.fakes import FakeBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


RATE, BURST = 200.0, 50  # chunk min(50, 200 × 0.1) = 20 tokens


def test_the_chunk_is_rate_times_lease_at_most_the_burst_and_none_below_two() -> None:
    leases = TokenLeases(FakeBuckets(Clock()), lease_s=0.1)
    assert leases.chunk(RATE, BURST) == 20
    assert leases.chunk(1e9, 1e9) == 10**8
    assert leases.chunk(1000.0, 50) == 50
    assert leases.chunk(19.0, 50) == 0  # 1.9 tokens: not worth a lease
    assert TokenLeases(FakeBuckets(Clock()), lease_s=0).chunk(1e9, 10**9) == 0
    with pytest.raises(ValueError):
        TokenLeases(FakeBuckets(Clock()), lease_s=-1)


async def test_takes_arriving_during_a_call_wait_for_its_lease() -> None:
    clock = Clock()
    buckets = FakeBuckets(clock, turns=lambda: 0)
    buckets.gate = asyncio.Event()
    leases = TokenLeases(buckets, lease_s=0.1, clock=clock)
    first = asyncio.ensure_future(leases.check("k", cost=1, rate=RATE, burst=BURST))
    await buckets.called.wait()  # the call is in flight, held at the gate
    later = [
        asyncio.ensure_future(leases.check("k", cost=1, rate=RATE, burst=BURST)) for _ in range(15)
    ]
    for _ in range(10):  # turns enough for them to send a call of their own, if they would
        await asyncio.sleep(0)
    assert buckets.calls == 1
    assert not any(take.done() for take in later)
    buckets.gate.set()
    await asyncio.gather(first, *later)
    # one call took 1 and leased 20: the 15 that waited were paid from the lease
    assert buckets.calls == 1
    assert leases.held("k", rate=RATE, burst=BURST) == 20 - 15


async def test_a_lease_older_than_lease_s_when_it_arrives_pays_nobody() -> None:
    """A lease counts from when its call was sent: one that took longer than ``lease_s`` to
    come back is given back by the next call, not spent."""
    clock = Clock()
    buckets = FakeBuckets(clock, turns=lambda: 0)
    buckets.gate = asyncio.Event()
    leases = TokenLeases(buckets, lease_s=0.1, clock=clock)
    first = asyncio.ensure_future(leases.check("k", cost=1, rate=RATE, burst=BURST))
    await buckets.called.wait()  # the call waits at the gate
    later = asyncio.ensure_future(leases.check("k", cost=1, rate=RATE, burst=BURST))
    await asyncio.sleep(0)  # one turn: ``later`` waits for the call's lease
    assert not later.done()
    clock.now += 0.1
    buckets.gate.set()
    await asyncio.gather(first, later)
    assert buckets.calls == 2
    # the second call gave the 20 back, took 1 and leased 20 again (the bucket refilled 20)
    assert leases.held("k", rate=RATE, burst=BURST) == 20
    assert buckets.tokens("k", rate=RATE, burst=BURST) == pytest.approx(BURST - 22, abs=1e-9)


async def test_without_a_lease_every_turn_asks_the_bucket() -> None:
    clock = Clock()
    buckets = FakeBuckets(clock)
    leases = TokenLeases(buckets, lease_s=0, clock=clock)
    for _ in range(5):
        await asyncio.gather(*(leases.check("k", cost=1, rate=RATE, burst=BURST) for _ in range(3)))
    assert buckets.calls == 5
    assert leases.held("k", rate=RATE, burst=BURST) == 0
    assert buckets.tokens("k", rate=RATE, burst=BURST) == BURST - 15


async def test_a_failed_call_fails_its_takes_and_drops_what_it_gave_back() -> None:
    clock = Clock()
    buckets = FakeBuckets(clock)
    leases = TokenLeases(buckets, lease_s=0.1, clock=clock)
    await leases.check("k", cost=1, rate=RATE, burst=BURST)
    clock.now += 0.1  # expired: the next take gives its 20 back
    buckets.down = True
    results = await asyncio.gather(
        *(leases.check("k", cost=1, rate=RATE, burst=BURST) for _ in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(r, Unavailable) for r in results)
    assert leases.held("k", rate=RATE, burst=BURST) == 0  # not spent, not counted twice
    buckets.down = False
    await leases.check("k", cost=1, rate=RATE, burst=BURST)
    assert leases.held("k", rate=RATE, burst=BURST) == 20


async def test_refused_with_retry_after_from_the_bucket() -> None:
    clock = Clock()
    leases = TokenLeases(FakeBuckets(clock), lease_s=0.1, clock=clock)
    await leases.check("k", cost=BURST, rate=RATE, burst=BURST)
    with pytest.raises(RateLimited) as refused:
        await leases.check("k", cost=1, rate=RATE, burst=BURST)
    assert refused.value.retry_after == 1
    assert "'k'" in refused.value.message


Sim = tuple[list[tuple[float, int]], int, float]


async def simulate(
    workers: int, lease_s: float, rng: random.Random, demand: Callable[[int], int]
) -> Sim:
    """``workers`` limiters on one bucket; at step i, ``demand(i)`` requests of random cost
    (1, 2 or 5) from random workers, with calls taking 0-3 turns and 1-5 ms passing between
    steps, and now and then a worker sweeping its expired leases. Every step checks that no
    worker holds more than a chunk. Returns (time, cost) of what was admitted, how many were
    refused, and the longest step (admission times are read up to one step late)."""
    clock = Clock()
    buckets = FakeBuckets(clock, turns=lambda: rng.randint(0, 3))
    limiters = [TokenLeases(buckets, lease_s=lease_s, clock=clock) for _ in range(workers)]
    chunk = limiters[0].chunk(RATE, BURST)
    admitted: list[tuple[float, int]] = []
    refused = 0
    pending: set[asyncio.Future[None]] = set()

    async def request(limiter: TokenLeases, cost: int) -> None:
        nonlocal refused
        try:
            await limiter.check("k", cost=cost, rate=RATE, burst=BURST)
        except RateLimited:
            refused += 1
            return
        admitted.append((clock.now, cost))

    longest = 0.0
    for step in range(3000):
        for _ in range(demand(step)):
            task = asyncio.ensure_future(request(rng.choice(limiters), rng.choice([1, 1, 2, 5])))
            pending.add(task)
            task.add_done_callback(pending.discard)
        for _ in range(rng.randint(1, 3)):
            await asyncio.sleep(0)  # a turn or three of the workers' loops
        if rng.random() < 0.05:
            await rng.choice(limiters).sweep()
        assert all(limiter.held("k", rate=RATE, burst=BURST) <= chunk for limiter in limiters)
        elapsed = rng.uniform(0.001, 0.005)
        longest = max(longest, elapsed)
        clock.now += elapsed
    await asyncio.gather(*pending)
    return admitted, refused, longest


def most_over_the_rate(admitted: list[tuple[float, int]]) -> float:
    """max over windows [t_i, t_j] of (tokens admitted in it − RATE × (t_j − t_i)); the exact
    bucket keeps this at most BURST."""
    best, later = float("-inf"), float("-inf")
    total = sum(cost for _, cost in admitted)
    for t, cost in reversed(admitted):  # prefix sums from the end
        later = max(later, total - RATE * t)  # total up to and including this one
        total -= cost
        best = max(best, later - (total - RATE * t))
    return best


@pytest.mark.parametrize("workers", [1, 3])
async def test_over_any_window_a_key_gets_at_most_a_chunk_per_worker_more_than_exact(
    workers: int,
) -> None:
    """Bursts and idle spells, so buckets refill while leases are out: leasing lets a key
    through at most ``workers × chunk`` more than the exact bucket over any window, and
    without leases (lease_s=0) the same traffic never exceeds the exact bucket."""
    bursty = lambda step: 30 if step % 400 < 40 else 0  # noqa: E731

    exact, _, step_s = await simulate(workers, 0, random.Random(7), bursty)
    assert most_over_the_rate(exact) <= BURST + RATE * step_s
    leased, refused, step_s = await simulate(workers, 0.1, random.Random(7), bursty)
    assert refused > 0  # the limit did bite
    assert most_over_the_rate(leased) <= BURST + workers * 20 + RATE * step_s


@pytest.mark.parametrize("workers", [1, 3])
async def test_under_steady_overload_a_key_gets_its_rate_within_a_chunk_per_worker(
    workers: int,
) -> None:
    """Demand far above the rate all the time: the bucket never refills to full, so the exact
    bucket admits burst + rate × time; leasing may leave up to a chunk per worker unspent."""
    admitted, refused, step_s = await simulate(workers, 0.1, random.Random(11), lambda _: 4)
    assert refused > 1000
    got = sum(cost for _, cost in admitted)
    exact = BURST + RATE * admitted[-1][0]
    assert exact - workers * 20 - 5 - RATE * step_s <= got <= exact + RATE * step_s
