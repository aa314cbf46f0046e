"""Micro-batching: concurrent requests share one state read, one model call, one commit.

Requests queue their events; one loop takes what is queued and hands it to the engine as one
batch. While ``in_flight`` batches are being scored, new requests pile up and form the next one,
so batches grow with load by themselves; with two in flight one computes while the other waits on
Redis or the model's thread. A batch takes at most its share of the events in the server (queued
or in flight, split evenly over the slots, and never more than ``max_batch``): one batch of
everything would leave the next slot nothing to overlap with until it is answered. Batches in
flight never share an entity: a request touching one waits, with every later request for it, so
each entity's requests are scored in the order they came. The optional window waits a little
longer for company only when the previous batch was shared, so a lone request never waits.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from riskstream.core.domain import Event
from riskstream.core.engine import Result
from riskstream.core.stats import EngineStats


class Scorer(Protocol):
    async def score(self, events: Sequence[Event]) -> list[Result]: ...


class Engine(Scorer, Protocol):
    """What batching needs of the engine: scoring a batch, and its statistics."""

    stats: EngineStats


class DirectScorer:
    """Batching off: each request is its own batch."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def score(self, events: Sequence[Event]) -> list[Result]:
        self._engine.stats.queue_wait(0.0)
        return await self._engine.score(events)


@dataclass(slots=True)
class _Request:
    events: Sequence[Event]
    done: asyncio.Future[list[Result]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class MicroBatcher:
    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int,
        window_s: float,
        in_flight: int = 1,
    ) -> None:
        self._engine = engine
        self._slots = asyncio.Semaphore(in_flight)
        self._in_flight = in_flight
        self._dispatching: dict[asyncio.Task[None], tuple[set[str], int]] = {}  # entities, events
        self._busy: set[str] = set()  # entities of the batches in flight (disjoint sets)
        self._freed = asyncio.Event()
        self._max_batch = max_batch
        self._window_s = window_s
        self._queue: deque[tuple[float, _Request]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_batch = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._dispatching:  # batches being scored finish: their events may be committed
            await asyncio.wait(list(self._dispatching))
        while self._queue:
            _, request = self._queue.popleft()
            if not request.done.done():
                request.done.cancel()

    @property
    def waiting(self) -> int:
        """Events queued and not yet in a batch (those of batches being scored not counted)."""
        return self._pending()

    async def score(self, events: Sequence[Event]) -> list[Result]:
        if not events:
            return []
        loop = asyncio.get_running_loop()
        request = _Request(events)
        self._queue.append((loop.time(), request))
        self._wakeup.set()
        return await request.done

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()  # requests pile up while every slot is busy
            try:
                taken: list[tuple[float, _Request]] = []
                size = 0
                while not taken:
                    if not self._queue:
                        self._wakeup.clear()
                        await self._wakeup.wait()
                        continue
                    if (
                        self._window_s > 0
                        and self._last_batch > 1
                        and self._pending() < self._share()
                    ):
                        await asyncio.sleep(self._window_s)
                    taken, size = self._take()
                    if not taken:  # all that waits touches entities of a batch in flight
                        self._freed.clear()
                        await self._freed.wait()
            except BaseException:
                self._slots.release()
                raise
            self._last_batch = size
            now = loop.time()
            self._engine.stats.queue_wait(max(now - t for t, _ in taken))
            requests = [r for _, r in taken]
            entities = {e.entity_id for r in requests for e in r.events}
            self._busy |= entities
            task = asyncio.create_task(self._dispatch(requests))
            self._dispatching[task] = (entities, size)
            task.add_done_callback(self._done)

    def _share(self) -> int:
        total = self._pending() + sum(n for _, n in self._dispatching.values())
        return max(1, min(self._max_batch, -(-total // self._in_flight)))

    def _take(self) -> tuple[list[tuple[float, _Request]], int]:
        """Queued requests in order, up to this batch's share of events (the first one whatever
        its size), passing over those that touch an entity of a batch in flight, or of a request
        passed over, so each entity's requests are scored in the order they came."""
        taken: list[tuple[float, _Request]] = []
        passed: list[tuple[float, _Request]] = []
        blocked: set[str] = set()
        size = 0
        limit = self._share()
        while self._queue:
            n = len(self._queue[0][1].events)
            if taken and size + n > limit:
                break
            item = self._queue.popleft()
            entities = {e.entity_id for e in item[1].events}
            if not entities.isdisjoint(blocked) or not entities.isdisjoint(self._busy):
                blocked |= entities
                passed.append(item)
                continue
            taken.append(item)
            size += n
        self._queue.extendleft(reversed(passed))
        return taken, size

    def _done(self, task: asyncio.Task[None]) -> None:
        entities, _ = self._dispatching.pop(task)
        self._busy -= entities
        self._slots.release()
        self._freed.set()

    def _pending(self) -> int:
        return sum(len(r.events) for _, r in self._queue)

    async def _dispatch(self, requests: list[_Request]) -> None:
        events = [e for r in requests for e in r.events]
        try:
            results = await self._engine.score(events)
        except Exception as exc:  # a backing service failed: every request in the batch fails
            for r in requests:
                if not r.done.done():
                    r.done.set_exception(exc)
            return
        start = 0
        for r in requests:
            end = start + len(r.events)
            if not r.done.done():
                r.done.set_result(results[start:end])
            start = end
