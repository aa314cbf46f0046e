"""Micro-batching with two or one batches in flight: what is taken together, and what waits.

Every step waits on what it expects (a batch reaching the engine, requests queued), never a
number of event-loop turns; ``GatedEngine`` also checks at every batch's start that no batch in
flight shares an entity with it, whenever the batcher starts one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from riskstream.core.batcher import MicroBatcher
from riskstream.core.domain import Event
from riskstream.core.stats import NoStats

TIMEOUT_S = 5.0


async def until(condition: Callable[[], bool]) -> None:
    """Let the event loop run until ``condition`` holds (a failure after ``TIMEOUT_S``): a poll
    of a public observable with a deadline, for what has no event to wait on."""
    async with asyncio.timeout(TIMEOUT_S):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0)


class GatedEngine:
    """Records each batch's events and holds it until its gate opens."""

    def __init__(self) -> None:
        self.stats = NoStats()
        self.batches: list[list[str]] = []
        self.gates: list[asyncio.Event] = []
        self.scoring: set[str] = set()  # entities of the batches being scored
        self.overlaps: list[set[str]] = []  # entities a batch shared with one in flight
        self._started = asyncio.Condition()

    async def score(self, events: Sequence[Event]) -> list[object]:
        entities = {e.entity_id for e in events}
        if entities & self.scoring:
            self.overlaps.append(entities & self.scoring)
        self.scoring |= entities
        self.batches.append([f"{e.entity_id}:{e.event_id}" for e in events])
        gate = asyncio.Event()
        self.gates.append(gate)
        async with self._started:
            self._started.notify_all()
        await gate.wait()
        self.scoring -= entities
        return [e.event_id for e in events]

    async def started(self, count: int) -> None:
        """Until ``count`` batches have reached the engine."""
        async with asyncio.timeout(TIMEOUT_S), self._started:
            await self._started.wait_for(lambda: len(self.batches) >= count)


def ev(entity: str, event: str) -> Event:
    return Event(entity, event, 1_800_000_000.0, {})


@contextlib.asynccontextmanager
async def running(in_flight: int) -> AsyncIterator[tuple[GatedEngine, MicroBatcher]]:
    engine = GatedEngine()
    batcher = MicroBatcher(engine, max_batch=8, window_s=0.0, in_flight=in_flight)  # type: ignore[arg-type]
    batcher.start()
    try:
        yield engine, batcher
    finally:
        for gate in engine.gates:
            gate.set()
        await batcher.stop()
    assert engine.overlaps == []  # never two batches in flight with the same entity


async def test_two_batches_in_flight_never_share_an_entity_and_keep_its_order() -> None:
    async with running(in_flight=2) as (engine, batcher):
        first = asyncio.create_task(batcher.score([ev("x", "1")]))
        await engine.started(1)
        second_x = asyncio.create_task(batcher.score([ev("x", "2")]))
        y = asyncio.create_task(batcher.score([ev("y", "1")]))
        await engine.started(2)
        # x is in flight: its next event waits (passed over); y, queued after it, is scored beside
        assert engine.batches == [["x:1"], ["y:1"]]
        assert batcher.waiting == 1
        engine.gates[1].set()
        assert await y == ["1"]
        assert batcher.waiting == 1  # a free slot, but x is still busy
        engine.gates[0].set()
        assert await first == ["1"]
        await engine.started(3)
        assert engine.batches[2] == ["x:2"]
        engine.gates[2].set()
        assert await second_x == ["2"]


async def test_with_one_in_flight_requests_pile_up_into_the_next_batch() -> None:
    async with running(in_flight=1) as (engine, batcher):
        first = asyncio.create_task(batcher.score([ev("a", "1")]))
        await engine.started(1)
        rest = [asyncio.create_task(batcher.score([ev(e, "1")])) for e in "bcd"]
        await until(lambda: batcher.waiting == 3)
        assert engine.batches == [["a:1"]]
        engine.gates[0].set()
        await first
        await engine.started(2)
        assert engine.batches[1] == ["b:1", "c:1", "d:1"]
        engine.gates[1].set()
        assert [await r for r in rest] == [["1"], ["1"], ["1"]]


async def test_two_slots_split_what_waits_so_one_batch_computes_while_the_other_waits() -> None:
    async with running(in_flight=2) as (engine, batcher):
        waiting = [asyncio.create_task(batcher.score([ev(e, "1")])) for e in "abcdef"]
        await engine.started(2)
        # one batch of all six (max_batch is 8) would leave the second slot idle
        assert engine.batches == [["a:1", "b:1", "c:1"], ["d:1", "e:1", "f:1"]]
        for gate in engine.gates:
            gate.set()
        assert [await w for w in waiting] == [["1"]] * 6


async def test_a_request_bigger_than_its_share_is_still_taken_whole() -> None:
    async with running(in_flight=2) as (engine, batcher):
        big = asyncio.create_task(batcher.score([ev(f"p{i}", "1") for i in range(12)]))
        await engine.started(1)
        assert len(engine.batches) == 1 and len(engine.batches[0]) == 12
        engine.gates[0].set()
        assert len(await big) == 12
