"""Per-key rate limits: a token bucket in Redis that every worker shares.

The bucket logic is one Lua script (``lua/token_buckets.lua``, package data) run atomically by
Redis on its own clock. A bulk request takes as many tokens as it has events. Workers do not
call it per request: ``core/rate_leases.py`` leases tokens in chunks and spends them locally.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from importlib.resources import files

import redis.asyncio as aioredis

from riskstream.adapters.redis_common import redis_errors
from riskstream.core.ports import BucketTake, Observe, RateDecision, ignore

__all__ = ["RateDecision", "RedisRateLimiter"]

_SCRIPT = files("riskstream.adapters").joinpath("lua/token_buckets.lua").read_text(encoding="utf-8")


class RedisRateLimiter:
    """The ``TokenBuckets`` port on Redis: key ``<prefix>:rl:<bucket>``."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, observe: Observe = ignore) -> None:
        self._script = client.register_script(_SCRIPT)
        self._prefix = prefix
        self._observe = observe

    def bucket_key(self, bucket: str) -> str:
        return f"{self._prefix}:rl:{bucket}"

    async def take(self, bucket: str, *, cost: int, rate: float, burst: int) -> RateDecision:
        """Take ``cost`` tokens from ``bucket`` (an API key's name), refilled at ``rate`` per
        second up to ``burst``."""
        if cost < 1:
            raise ValueError(f"need cost >= 1 (got {cost})")
        [decision] = await self.take_many([BucketTake(bucket, cost)], rate=rate, burst=burst)
        return decision

    async def take_many(
        self, takes: Sequence[BucketTake], *, rate: float, burst: int
    ) -> list[RateDecision]:
        """One call of ``lua/token_buckets.lua``: each take decided in order."""
        if rate <= 0 or burst < 1:
            raise ValueError(f"need rate > 0, burst >= 1 (got {rate}, {burst})")
        args: list[float | int] = [rate, burst]
        for take in takes:
            if take.cost < 0 or take.give_back < 0 or take.lease < 0:
                raise ValueError(f"negative cost, give_back or lease: {take}")
            args += [take.cost, take.give_back, take.lease]
        started = time.perf_counter()
        async with redis_errors():
            reply = await self._script(keys=[self.bucket_key(t.bucket) for t in takes], args=args)
        self._observe("rate_limit", time.perf_counter() - started)
        now = float(reply[0])
        fields = iter(reply[1:])
        return [
            RateDecision(
                allowed=int(allowed) == 1,
                retry_after_s=float(wait),
                remaining=float(remaining),
                server_time=now,
                leased=int(leased),
            )
            for allowed, wait, remaining, leased in zip(fields, fields, fields, fields)
        ]
