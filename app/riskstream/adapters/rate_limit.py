"""Per-key rate limits: a token bucket in Redis that every worker shares.

The bucket logic is one Lua script (``lua/token_buckets.lua``, package data) run atomically by
Redis on its own clock. A bulk request takes as many tokens as it has events.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from importlib.resources import files

import redis.asyncio as aioredis

from riskstream.adapters.redis_common import redis_errors
from riskstream.core.errors import RateLimited
from riskstream.core.ports import Observe, ignore

_SCRIPT = files("riskstream.adapters").joinpath("lua/token_buckets.lua").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after_s: float  # 0 when allowed; else until the bucket holds what was asked
    remaining: float  # tokens left after this request (negative: a bulk request's debt)
    server_time: float  # Redis's clock when it decided, epoch seconds

    @property
    def retry_after(self) -> int:
        """For the ``Retry-After`` header: whole seconds, at least 1."""
        return max(1, math.ceil(self.retry_after_s))


class RedisRateLimiter:
    def __init__(self, client: aioredis.Redis, *, prefix: str, observe: Observe = ignore) -> None:
        self._script = client.register_script(_SCRIPT)
        self._pending: list[tuple[str, int, float, int, asyncio.Future[RateDecision]]] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self._prefix = prefix
        self._observe = observe

    def bucket_key(self, bucket: str) -> str:
        return f"{self._prefix}:rl:{bucket}"

    async def take(self, bucket: str, *, cost: int, rate: float, burst: int) -> RateDecision:
        """Take ``cost`` tokens from ``bucket`` (an API key's name), refilled at ``rate`` per
        second up to ``burst``."""
        if cost < 1 or rate <= 0 or burst < 1:
            raise ValueError(f"need cost >= 1, rate > 0, burst >= 1 (got {cost}, {rate}, {burst})")
        [decision] = await self._decide([(bucket, cost)], rate=rate, burst=burst)
        return decision

    async def take_gathered(
        self, bucket: str, *, cost: int, rate: float, burst: int
    ) -> RateDecision:
        """``take``, gathered with the other takes of this event-loop turn into one script call
        (``lua/token_buckets.lua``): the same decisions, in arrival order, for one Redis round
        trip per turn instead of one per request (~170 µs of this process's CPU each)."""
        if cost < 1 or rate <= 0 or burst < 1:
            raise ValueError(f"need cost >= 1, rate > 0, burst >= 1 (got {cost}, {rate}, {burst})")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RateDecision] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)  # runs after the requests ready in this turn
        self._pending.append((bucket, cost, rate, burst, future))
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        groups: dict[tuple[float, int], list[tuple[str, int, asyncio.Future[RateDecision]]]] = {}
        for bucket, cost, rate, burst, future in pending:
            groups.setdefault((rate, burst), []).append((bucket, cost, future))
        for (rate, burst), takes in groups.items():
            task = asyncio.ensure_future(self._run(rate, burst, takes))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _run(
        self,
        rate: float,
        burst: int,
        takes: list[tuple[str, int, asyncio.Future[RateDecision]]],
    ) -> None:
        try:
            decisions = await self._decide(
                [(bucket, cost) for bucket, cost, _ in takes], rate=rate, burst=burst
            )
        except BaseException as error:
            for _, _, future in takes:
                if future.done():
                    continue
                if isinstance(error, Exception):
                    future.set_exception(error)
                else:  # cancelled (shutdown): so are the takes waiting on it
                    future.cancel()
            if not isinstance(error, Exception):
                raise
            return
        for (_, _, future), decision in zip(takes, decisions):
            if not future.done():
                future.set_result(decision)

    async def _decide(
        self, takes: list[tuple[str, int]], *, rate: float, burst: int
    ) -> list[RateDecision]:
        """One call of ``lua/token_buckets.lua``: each (bucket, cost) decided in order."""
        started = time.perf_counter()
        async with redis_errors():
            reply = await self._script(
                keys=[self.bucket_key(bucket) for bucket, _ in takes],
                args=[rate, burst, *[cost for _, cost in takes]],
            )
        self._observe("rate_limit", time.perf_counter() - started)
        now = float(reply[0])
        return [
            RateDecision(int(allowed) == 1, float(wait), float(remaining), now)
            for allowed, wait, remaining in zip(reply[1::3], reply[2::3], reply[3::3])
        ]

    async def check(self, bucket: str, *, cost: int, rate: float, burst: int) -> RateDecision:
        """``take`` (gathered with this turn's others), raising ``RateLimited`` (429 with
        ``Retry-After``) when refused."""
        decision = await self.take_gathered(bucket, cost=cost, rate=rate, burst=burst)
        if not decision.allowed:
            raise RateLimited(
                f"the API key {bucket!r} is over its rate limit of {rate:g} events/s "
                f"(burst {burst}); retry in {decision.retry_after} s",
                retry_after=decision.retry_after,
            )
        return decision
