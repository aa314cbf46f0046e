"""The application service over the core's ports, on fakes: what the routes can ask of it."""

from __future__ import annotations

import pytest
from riskstream.core.batcher import DirectScorer
from riskstream.core.domain import Event
from riskstream.core.drain import OutboxDrainer
from riskstream.core.engine import ScoringEngine
from riskstream.core.errors import InvalidInput, OutOfOrder, Unavailable, UnknownEntity
from riskstream.core.readiness import ReadinessProbe
from riskstream.core.service import RiskService
from riskstream.core.stats import EventOutcome

from tests.unit.fakes import FakeLog, FakeModel, FakeOutbox, FakeStore, FakeViews

T0 = 1_800_000_000.0
NOW = T0 + 86_400.0  # the engine's clock: the events below lie in its past


class CountingStats:
    def __init__(self) -> None:
        self.counted: dict[str, int] = {}

    def events(self, outcome: EventOutcome, count: int) -> None:
        self.counted[outcome] = self.counted.get(outcome, 0) + count


def service(
    store: FakeStore | None = None, log: FakeLog | None = None, stats: CountingStats | None = None
) -> RiskService:
    model, store, log = FakeModel(), store or FakeStore(), log or FakeLog()
    engine = ScoringEngine(model, store, log, clock=lambda: NOW)
    outbox = FakeOutbox(store)
    return RiskService(
        scorer=DirectScorer(engine),
        store=store,
        log=log,
        views=FakeViews(store),
        manifest=model.manifest,
        thresholds={},
        stats=stats,
        readiness=ReadinessProbe(
            pings={"redis": lambda: store.ping(), "database": lambda: log.ping()},
            outbox=outbox,
            drainer=OutboxDrainer(outbox, log, batch=10),
            model_key=model.manifest.key,
            stall_s=30,
        ),
    )


async def test_scores_reads_and_forgets_through_the_ports() -> None:
    risk = service()
    first = await risk.score_event(Event("p1", "e1", T0, {"a": 1.0}))
    assert (first.score.step, first.duplicate) == (1, False)
    [again, late] = await risk.score_events(
        [Event("p1", "e1", T0, {"a": 1.0}), Event("p1", "e0", T0 - 60, {})]
    )
    assert not isinstance(again, Exception) and again.duplicate
    assert isinstance(late, OutOfOrder)
    with pytest.raises(OutOfOrder):
        await risk.score_event(Event("p1", "e0", T0 - 60, {}))

    latest = await risk.latest_risk("p1")
    assert (latest.entity_id, latest.step, latest.latest.event_id) == ("p1", 1, "e1")
    [watched] = await risk.watchlist(risk.output(None), min_risk=0.0, limit=10)
    assert watched.entity_id == "p1"
    page = await risk.feed(None, 10)
    assert [e.score.event_id for e in page.entries] == ["e1"]

    await risk.forget("p1")
    with pytest.raises(UnknownEntity):
        await risk.latest_risk("p1")
    with pytest.raises(UnknownEntity):
        await risk.forget("p1")


async def test_each_event_is_counted_once_by_its_outcome() -> None:
    stats, store = CountingStats(), FakeStore()
    risk = service(store=store, stats=stats)
    await risk.score_event(Event("p1", "e1", T0, {"a": 1.0}))
    await risk.score_events(
        [
            Event("p1", "e1", T0, {"a": 1.0}),  # duplicate
            Event("p1", "e0", T0 - 60, {}),  # late
            Event("p1", "e2", T0 + 60, {"nope": 1.0}),  # invalid: no such feature
            Event("p2", "e1", T0, {}),
        ]
    )
    with pytest.raises(InvalidInput):
        await risk.score_event(Event("p1", "e3", T0 + 60, {"a": float("nan")}))
    risk.refused(2)  # items the web layer could not parse
    risk.refused(0)
    assert stats.counted == {"scored": 2, "duplicate": 1, "late": 1, "invalid": 4}

    store.down = Unavailable("Redis is unreachable", field="redis")
    with pytest.raises(Unavailable):
        await risk.score_event(Event("p1", "e4", T0 + 120, {}))
    with pytest.raises(Unavailable):
        await risk.score_events([Event("p3", "e1", T0, {}), Event("p4", "e1", T0, {})])
    assert stats.counted["unavailable"] == 3 and sum(stats.counted.values()) == 11


def test_an_output_the_model_lacks_is_invalid_input() -> None:
    risk = service()
    assert risk.output(None) == "risk"
    with pytest.raises(InvalidInput) as refused:
        risk.output("")
    assert refused.value.field == "output"


async def test_readiness_names_what_cannot_be_reached() -> None:
    log = FakeLog()
    risk = service(log=log)
    ready = await risk.readiness()
    assert (ready.status, ready.checks["redis"], ready.checks["database"]) == ("ready", "ok", "ok")

    async def down() -> None:
        raise Unavailable("the database is unreachable", field="database")

    log.ping = down  # type: ignore[method-assign]
    not_ready = await risk.readiness()
    assert (not_ready.status, not_ready.unreachable) == ("not_ready", ["database"])
    assert not_ready.checks["database"] == "the database is unreachable"
