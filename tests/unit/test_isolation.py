"""One event's failure is that event's result: the rest of its batch is scored and committed."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import numpy as np
from riskstream.core.domain import Event, Outcome, Score
from riskstream.core.engine import ScoringEngine
from riskstream.core.errors import InvalidInput, OutOfOrder, Unavailable

from tests.unit.fakes import FakeLog, FakeModel, FakeStore

NOW = 1_795_900_000.0
T = NOW - 86_400.0
POISON = 13.0  # the value the fake model below cannot score


class BrokenModel(FakeModel):
    """The fake model, but a row with ``a == 13`` gets a NaN risk and with ``b == 13`` an
    infinite next state (as a model might for inputs far from its training data)."""

    def step(
        self, x: np.ndarray, dt: np.ndarray, states: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        risk, nxt = super().step(np.where(x == POISON, 0.0, x).astype(np.float32), dt, states)
        risk[x[:, 0] == POISON] = np.nan
        nxt["h"][:, x[:, 1] == POISON, 1] = np.inf
        return risk, nxt


class FlakyLog(FakeLog):
    """A score log whose lookups fail for some entities and can be held to count them in flight."""

    def __init__(self, failing: set[str]) -> None:
        super().__init__()
        self.failing = failing
        self.in_flight = 0
        self.most_in_flight = 0
        self.calls = 0

    async def find(self, entity_id: str, event_id: str) -> Score | None:
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            if entity_id in self.failing:
                raise Unavailable("the database is unreachable", field="database")
            return await super().find(entity_id, event_id)
        finally:
            self.in_flight -= 1


def ev(entity: str, event: str, t: float, **values: float) -> Event:
    return Event(entity, event, t, values)


async def test_a_non_finite_risk_or_state_fails_that_event_only_and_is_not_committed() -> None:
    store, log = FakeStore(), FakeLog()
    engine = ScoringEngine(BrokenModel(), store, log, clock=lambda: NOW)
    results = await engine.score(
        [ev("p1", "e1", T, a=POISON), ev("p2", "e1", T, a=1.0), ev("p3", "e1", T, b=POISON)]
    )
    for bad in (results[0], results[2]):
        assert isinstance(bad, InvalidInput) and bad.status == 422
        assert bad.code == "invalid_input" and "could not score these inputs" in bad.message
    ok = results[1]
    assert isinstance(ok, Outcome) and ok.score.step == 1
    assert set(store.states) == {"p2"}
    assert [c.score.entity_id for c in store.outbox] == ["p2"]
    # the entity refused is untouched: its next valid event is its first step
    [again] = await engine.score([ev("p1", "e2", T + 60, a=2.0)])
    assert isinstance(again, Outcome) and again.score.step == 1
    assert np.isfinite(store.states["p1"].tensors["h"]).all()


async def test_a_failing_late_event_lookup_fails_that_event_only() -> None:
    store, log = FakeStore(), FlakyLog(failing={"p1"})
    engine = ScoringEngine(FakeModel(), store, log, clock=lambda: NOW)
    first = await engine.score([ev(p, "e1", T + 3600) for p in ("p1", "p3")])
    assert all(isinstance(r, Outcome) for r in first)
    store.seen.clear()  # the late events are not in the dedup history: the log is asked
    results = await engine.score(
        [
            ev("p1", "late", T),  # lookup fails: 503 for this event alone
            ev("p2", "e1", T, a=1.0),  # a new entity: scored
            ev("p3", "late", T),  # lookup works, not found: 409
            ev("p1", "e2", T + 7200),  # same entity as the failed one, next round: scored
        ]
    )
    assert isinstance(results[0], Unavailable) and results[0].status == 503
    assert "database" in results[0].message
    assert isinstance(results[1], Outcome) and results[1].score.step == 1
    assert isinstance(results[2], OutOfOrder)
    assert isinstance(results[3], Outcome) and results[3].score.step == 2
    assert store.states["p2"].step == 1 and store.states["p1"].step == 2


async def test_late_event_lookups_of_a_round_run_concurrently_a_few_at_a_time() -> None:
    store, log = FakeStore(), FlakyLog(failing=set())
    engine = ScoringEngine(FakeModel(), store, log, clock=lambda: NOW)
    entities = [f"p{i}" for i in range(20)]
    await engine.score([ev(p, "e1", T + 3600) for p in entities])
    store.seen.clear()
    results = await engine.score([ev(p, "late", T) for p in entities])
    assert all(isinstance(r, OutOfOrder) for r in results)
    assert log.calls == 20 and 1 < log.most_in_flight <= 4
