"""Rate limits without a round trip per request: tokens leased from the shared bucket in chunks.

Each API key has one token bucket shared by every worker (``TokenBuckets``: Redis). Asking it
for every request cost ~0.15 ms of CPU (worker and Redis) per single-event request
(docs/performance.md), and the wait for its answer split the micro-batcher's batches. Instead,
the take that finds this worker's tokens short also leases up to
``chunk = min(burst, ⌊rate × lease_s⌋)`` more, and the next requests spend them here: a request
costs a dict lookup and a decrement, and the bucket is asked about once per chunk.

What that costs in exactness (docs/auth.md; counted in tests/unit/test_rate_leases.py and
tests/integration/test_rate_limit.py):
- a worker holds at most one lease per key, of at most ``chunk`` tokens, and spends it only
  within ``lease_s`` of taking it; what is left then goes back to the bucket (with the worker's
  next take of that key, at the next ``sweep`` or at ``close``), never filling it past the burst;
- so with N workers a request can be refused while the other workers hold up to
  ``(N - 1) × chunk`` of its key's tokens, until they spend or give them back; and over any
  window a key is admitted at most ``N × chunk`` more than the exact bucket would admit (the
  bucket refills while leases are out);
- a chunk under 2 tokens (a rate under ``2 / lease_s``) leases nothing: every take asks the
  bucket, exactly as without leases.

Why ``N × chunk``: a lease only moves tokens from the bucket to a worker, a give-back moves them
back (or drops them at the burst), and spending removes them. So what a window ``[t0, t1]``
admits is at most the bucket at ``t0`` (≤ burst), plus the leases held at ``t0`` (≤ N × chunk),
plus the refill ``rate × (t1 - t0)``; the exact bucket's bound is the same without the leases.
And a refused take gave back its own worker's lease first, so only the others' can be missing.

The takes one event-loop turn sends to the bucket go in one call, each decided in arrival order
as if alone; a worker has at most one call per key in flight, and the takes that arrive
meanwhile wait for its lease rather than lease another.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

from riskstream.core.errors import RateLimited
from riskstream.core.ports import BucketTake, RateDecision, TokenBuckets

_Key = tuple[str, float, int]  # bucket (a key's name), rate, burst
_Waiting = deque[tuple[int, "asyncio.Future[RateDecision | None]"]]  # None: allowed locally


class _Lease:
    __slots__ = ("busy", "due", "expires", "held", "key", "waiting")

    def __init__(self, key: _Key) -> None:
        self.key = key
        self.held = 0  # leased tokens not spent yet
        self.expires = 0.0  # on the local clock; then ``held`` goes back, unspent
        self.waiting: _Waiting = deque()  # takes the lease could not pay, in arrival order
        self.busy = False  # a call to the bucket is in flight
        self.due = False  # a call is scheduled for the end of this turn


class TokenLeases:
    def __init__(
        self,
        buckets: TokenBuckets,
        *,
        lease_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lease_s < 0:
            raise ValueError(f"need lease_s >= 0 (got {lease_s})")
        self.lease_s = lease_s
        self._buckets = buckets
        self._clock = clock
        self._leases: dict[_Key, _Lease] = {}
        self._due: list[_Lease] = []
        self._sending: set[asyncio.Task[None]] = set()

    def chunk(self, rate: float, burst: int) -> int:
        """The most a lease holds: ``rate × lease_s`` tokens, at most the burst; 0 (no leasing)
        below 2."""
        chunk = min(burst, math.floor(rate * self.lease_s))
        return chunk if chunk >= 2 else 0

    def held(self, bucket: str, *, rate: float, burst: int) -> int:
        """Tokens of ``bucket`` this worker leased and has not spent nor given back."""
        lease = self._leases.get((bucket, rate, burst))
        return 0 if lease is None else lease.held

    async def check(self, bucket: str, *, cost: int, rate: float, burst: int) -> None:
        """Spend ``cost`` tokens of ``bucket``: from this worker's lease if it holds them, else
        from the shared bucket (leasing more); ``RateLimited`` (429 with ``Retry-After``) when
        the bucket refuses."""
        if cost < 1 or rate <= 0 or burst < 1:
            raise ValueError(f"need cost >= 1, rate > 0, burst >= 1 (got {cost}, {rate}, {burst})")
        key = (bucket, rate, burst)
        lease = self._leases.get(key)
        if lease is None:
            lease = self._leases[key] = _Lease(key)
        elif lease.held >= cost and not lease.waiting and self._clock() < lease.expires:
            lease.held -= cost  # the common case: no call, no wait
            return
        future: asyncio.Future[RateDecision | None] = asyncio.get_running_loop().create_future()
        lease.waiting.append((cost, future))
        self._schedule(lease)
        decision = await future
        if decision is not None and not decision.allowed:
            raise RateLimited(
                f"the API key {bucket!r} is over its rate limit of {rate:g} events/s "
                f"(burst {burst}); retry in {decision.retry_after} s",
                retry_after=decision.retry_after,
            )

    async def sweep(self) -> int:
        """Give back the leftovers of expired leases (one call per rate and burst); forget idle
        keys. The caller runs this every ``lease_s`` or so. Returns the tokens given back."""
        return await self._give_back(self._clock())

    async def close(self) -> int:
        """Give back every lease's leftovers (at shutdown). Returns the tokens given back."""
        return await self._give_back(math.inf)

    async def _give_back(self, now: float) -> int:
        groups: dict[tuple[float, int], list[BucketTake]] = {}
        for key, lease in list(self._leases.items()):
            if lease.busy or lease.waiting:
                continue
            if lease.held and lease.expires <= now:
                groups.setdefault(key[1:], []).append(BucketTake(key[0], 0, give_back=lease.held))
                lease.held = 0
            if not lease.held:
                del self._leases[key]
        given = 0
        for (rate, burst), takes in groups.items():
            await self._buckets.take_many(takes, rate=rate, burst=burst)
            given += sum(take.give_back for take in takes)
        return given

    def _schedule(self, lease: _Lease) -> None:
        if lease.busy or lease.due:
            return  # the call in flight serves ``waiting`` when it returns, or schedules again
        lease.due = True
        if not self._due:
            asyncio.get_running_loop().call_soon(self._flush)  # after this turn's requests
        self._due.append(lease)

    def _flush(self) -> None:
        due, self._due = self._due, []
        groups: dict[tuple[float, int], list[tuple[_Lease, list[BucketTake], _Waiting]]] = {}
        for lease in due:
            lease.due = False
            waiting = deque(item for item in lease.waiting if not item[1].done())
            lease.waiting.clear()
            if not waiting:
                continue
            bucket, rate, burst = lease.key
            last = len(waiting) - 1
            # the leftovers go back before the first take; the new lease comes after the last
            takes = [
                BucketTake(
                    bucket,
                    cost,
                    give_back=lease.held if i == 0 else 0,
                    lease=self.chunk(rate, burst) if i == last else 0,
                )
                for i, (cost, _) in enumerate(waiting)
            ]
            lease.held = 0
            lease.busy = True
            groups.setdefault((rate, burst), []).append((lease, takes, waiting))
        for (rate, burst), members in groups.items():
            task = asyncio.ensure_future(self._send(rate, burst, members))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(
        self,
        rate: float,
        burst: int,
        members: list[tuple[_Lease, list[BucketTake], _Waiting]],
    ) -> None:
        started = self._clock()  # a lease expires lease_s after this, at most after its take
        try:
            decisions = await self._buckets.take_many(
                [take for _, takes, _ in members for take in takes], rate=rate, burst=burst
            )
        except BaseException as error:
            for lease, _, waiting in members:
                lease.busy = False  # what it gave back is lost: fewer tokens, never more
                for _, future in waiting:
                    if future.done():
                        continue
                    if isinstance(error, Exception):
                        future.set_exception(error)
                    else:  # cancelled (shutdown): so are the takes waiting on it
                        future.cancel()
                self._serve(lease)
            if not isinstance(error, Exception):
                raise
            return
        first = 0
        for lease, takes, waiting in members:
            mine = decisions[first : first + len(takes)]
            first += len(takes)
            for (_, future), decision in zip(waiting, mine):
                if not future.done():
                    future.set_result(decision)
            lease.held = mine[-1].leased
            lease.expires = started + self.lease_s
            lease.busy = False
            self._serve(lease)

    def _serve(self, lease: _Lease) -> None:
        """The takes that arrived during the call: from the new lease while it lasts, in
        order; the rest go to the bucket at the end of this turn."""
        fresh = self._clock() < lease.expires
        while lease.waiting:
            cost, future = lease.waiting[0]
            if not future.done():
                if not fresh or lease.held < cost:
                    break
                lease.held -= cost
                future.set_result(None)
            lease.waiting.popleft()
        if lease.waiting:
            self._schedule(lease)
