"""The application service over the core's ports, on fakes: what the routes can ask of it."""

from __future__ import annotations

import pytest

from app.core.batcher import DirectScorer
from app.core.domain import Event
from app.core.engine import ScoringEngine
from app.core.errors import InvalidInput, OutOfOrder, UnknownEntity
from app.core.service import RiskService
from tests.unit.fakes import FakeLog, FakeModel, FakeStore, FakeViews

T0 = 1_800_000_000.0
NOW = T0 + 86_400.0  # the engine's clock: the events below lie in its past


def service() -> RiskService:
    model, store, log = FakeModel(), FakeStore(), FakeLog()
    engine = ScoringEngine(model, store, log, clock=lambda: NOW)
    return RiskService(
        scorer=DirectScorer(engine),
        store=store,
        log=log,
        views=FakeViews(store),
        manifest=model.manifest,
        thresholds={},
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


def test_an_output_the_model_lacks_is_invalid_input() -> None:
    risk = service()
    assert risk.output(None) == "risk"
    with pytest.raises(InvalidInput) as refused:
        risk.output("")
    assert refused.value.field == "output"
