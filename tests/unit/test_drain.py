"""The outbox drain: no record stops the others; a database that is down sets nothing aside."""

from __future__ import annotations

import asyncio
import logging

import pytest
from riskstream.core import readiness
from riskstream.core.domain import LoggedScore, Score
from riskstream.core.drain import OutboxDrainer, drain_once
from riskstream.core.errors import Unavailable
from riskstream.core.ports import Undecodable

from tests.unit.fakes import FakeDrainStats, FakeLog, FakeOutbox, FakeStore


def logged(n: int, entity: str = "p1") -> LoggedScore:
    score = Score(f"s{n:04d}", entity, f"e{n}", n, 1e9 + n, 1e9 + n, "fake", "1", {"risk": 0.5})
    return LoggedScore(score, {"a": 4242.0 + n})


def outbox_with(*entries: LoggedScore | Undecodable) -> FakeOutbox:
    outbox = FakeOutbox(FakeStore())
    for entry in entries:
        outbox.add(entry)
    return outbox


async def test_a_refused_record_goes_to_the_dead_letters_and_the_rest_lands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = [logged(n) for n in range(10)]
    outbox, log, stats = outbox_with(*records), FakeLog(), FakeDrainStats()
    log.refuse = {"s0003", "s0007"}
    with caplog.at_level(logging.INFO):
        assert await drain_once(outbox, log, limit=100, stats=stats) == 10
    assert sorted(log.scores) == sorted(f"s{n:04d}" for n in range(10) if n not in (3, 7))
    assert [(d.entity_id, d.event_id) for d in outbox.dead] == [("p1", "e3"), ("p1", "e7")]
    assert all(d.error == "OverflowError: date value out of range" for d in outbox.dead)
    assert [d.entry_id for d in outbox.dead] == ["3-0", "7-0"]
    assert outbox.pending == {} and stats.dead == 2
    assert "dead letters" in caplog.text and "4245" not in caplog.text  # never the values


async def test_an_undecodable_entry_goes_to_the_dead_letters() -> None:
    outbox, log, stats = (
        outbox_with(logged(1), Undecodable("bad JSON"), logged(2)),
        FakeLog(),
        FakeDrainStats(),
    )
    assert await drain_once(outbox, log, limit=100, stats=stats) == 3
    assert sorted(log.scores) == ["s0001", "s0002"]
    assert [(d.entry_id, d.entity_id) for d in outbox.dead] == [("1-0", None)]
    assert "bad JSON" in outbox.dead[0].error and stats.dead == 1 and outbox.pending == {}


async def test_a_database_that_is_down_sets_nothing_aside() -> None:
    outbox, log, stats = outbox_with(logged(1), logged(2)), FakeLog(), FakeDrainStats()
    log.down = True
    with pytest.raises(Unavailable):
        await drain_once(outbox, log, limit=100, stats=stats)
    assert outbox.dead == [] and outbox.acked == [] and len(outbox.pending) == 2
    log.down = False
    assert await drain_once(outbox, log, limit=100, stats=stats) == 2
    assert len(log.scores) == 2 and stats.dead == 0


async def test_the_drainer_goes_on_past_a_refused_record() -> None:
    """Before: the batch holding the bad record was retried forever and nothing after it landed."""
    store = FakeStore()
    outbox, log, stats = FakeOutbox(store), FakeLog(), FakeDrainStats()
    store.outbox += [logged(n) for n in range(50)]
    log.refuse = {"s0010"}
    drainer = OutboxDrainer(outbox, log, batch=20, pause_s=0.001, stats=stats)
    drainer.start()
    try:
        for _ in range(500):
            if len(log.scores) == 49:
                break
            await asyncio.sleep(0.01)
    finally:
        await drainer.stop()
    assert len(log.scores) == 49 and [d.event_id for d in outbox.dead] == ["e10"]
    assert stats.dead == 1 and await outbox.backlog() == 0
    await drainer.check_redis()
    assert stats.waiting == 1


async def test_a_marker_that_cannot_be_checked_does_not_stop_the_drain() -> None:
    outbox, log = outbox_with(logged(1)), FakeLog()
    outbox.marker_error = RuntimeError("WRONGTYPE Operation against a key")
    drainer = OutboxDrainer(outbox, log, batch=10)
    assert await drainer._round() == 1 and list(log.scores) == ["s0001"]
    (warning,) = await readiness.warnings(outbox, drainer, stall_s=30)
    assert warning["field"] == "redis" and "WRONGTYPE" in warning["message"]


async def test_an_emptied_redis_is_noticed_once() -> None:
    outbox, stats = outbox_with(), FakeDrainStats()
    drainer = OutboxDrainer(outbox, FakeLog(), batch=10, stats=stats, wall_clock=lambda: 1.8e9)
    await drainer.check_redis()
    assert drainer.redis_emptied_at is None and stats.emptied == 0
    outbox.emptied()
    await drainer.check_redis()
    await drainer.check_redis()
    assert drainer.redis_emptied_at == 1.8e9 and stats.emptied == 1


async def test_readiness_warns_of_dead_letters_a_stalled_drain_and_an_emptied_redis() -> None:
    now = [100.0]
    outbox, log = outbox_with(logged(1), logged(2)), FakeLog()
    drainer = OutboxDrainer(outbox, log, batch=10, clock=lambda: now[0], wall_clock=lambda: 1.8e9)
    assert await readiness.warnings(outbox, drainer, stall_s=30) == []  # waiting, not stalled

    now[0] += 31  # no round of the drain for 31 s while two scores wait
    (stalled,) = await readiness.warnings(outbox, drainer, stall_s=30)
    assert stalled["field"] == "outbox" and "2 score(s) waiting" in stalled["message"]

    log.refuse = {"s0001"}
    await drainer._round()
    (dead,) = await readiness.warnings(outbox, drainer, stall_s=30)
    assert dead["field"] == "deadletter" and dead["message"].startswith("1 dead letter")

    outbox.emptied()
    fields = [w["field"] for w in await readiness.warnings(outbox, drainer, stall_s=30)]
    assert fields == ["redis", "deadletter"]
    (emptied,) = [
        w for w in await readiness.warnings(outbox, drainer, stall_s=30) if w["field"] == "redis"
    ]
    assert "2027-01-15T08:00:00Z" in emptied["message"]


async def test_each_score_committed_to_sql_reports_its_lag_since_it_was_scored() -> None:
    records = [logged(n) for n in range(4)]  # scored at 1e9 + n
    outbox, log, stats = outbox_with(*records, Undecodable("bad JSON")), FakeLog(), FakeDrainStats()
    log.refuse = {"s0002"}
    assert await drain_once(outbox, log, limit=100, stats=stats, wall_clock=lambda: 1e9 + 10) == 5
    assert sorted(stats.lags) == [7.0, 9.0, 10.0]  # not the refused one, nor the undecodable
    log.down = True
    outbox.add(logged(9))
    with pytest.raises(Unavailable):
        await drain_once(outbox, log, limit=100, stats=stats, wall_clock=lambda: 1e9 + 20)
    assert len(stats.lags) == 3  # nothing committed, no lag
