"""Replay and rehydration in the core, on the fakes: the rebuilt state is the live one."""

from __future__ import annotations

import numpy as np
from riskstream.core.alerts import Threshold
from riskstream.core.domain import Event, Outcome
from riskstream.core.drain import drain_once
from riskstream.core.engine import ScoringEngine
from riskstream.core.replay import Replayer

from tests.unit.fakes import FakeLog, FakeModel, FakeOutbox, FakeStore

T0 = 1_800_000_000.0
NOW = T0 + 30 * 86_400.0
LEVELS = {"risk": Threshold(0.9, 0.8)}


def make() -> tuple[ScoringEngine, FakeStore, FakeLog, Replayer]:
    model, store, log = FakeModel(), FakeStore(), FakeLog()
    replayer = Replayer(model, log, thresholds=LEVELS, dedup_history=3, batch=2)
    engine = ScoringEngine(
        model, store, log, clock=lambda: NOW, thresholds=LEVELS, replayer=replayer
    )
    return engine, store, log, replayer


def ev(entity: str, event: str, hours: float, **values: float | None) -> Event:
    return Event(entity, event, T0 + hours * 3600, values)


async def live(engine: ScoringEngine, store: FakeStore, log: FakeLog) -> list[Outcome]:
    """Three entities of different lengths, events interleaved, one at a time; drained."""
    outcomes = []
    for k in range(6):
        for n, entity in enumerate(["p1", "p2", "p3"][: 1 + k % 3]):
            [result] = await engine.score([ev(entity, f"e{k}", k + n / 10, a=k * 0.7, b=None)])
            assert isinstance(result, Outcome)
            outcomes.append(result)
    await drain_once(FakeOutbox(store), log, limit=1000)
    return outcomes


async def test_rebuilt_states_equal_the_live_ones_bit_for_bit() -> None:
    engine, store, log, replayer = make()
    await live(engine, store, log)
    rebuilt = await replayer.rebuild(["p1", "p2", "p3", "nobody"])
    assert set(rebuilt) == {"p1", "p2", "p3"}
    for entity, result in rebuilt.items():
        stored = store.states[entity]
        assert result.state.step == stored.step and result.state.last_time == stored.last_time
        assert result.state.latest == stored.latest and result.state.previous == stored.previous
        assert result.state.alerts == stored.alerts
        assert stored.tensors["h"].tobytes() == result.state.tensors["h"].tobytes()
        logged = sorted(
            (r.score for r in log.scores.values() if r.score.entity_id == entity),
            key=lambda s: s.step,
        )
        assert list(result.recent) == logged[-3:]


async def test_a_missing_state_is_rehydrated_on_the_next_event() -> None:
    engine, store, log, _ = make()
    await live(engine, store, log)
    control_engine, control_store, control_log, _ = make()
    await live(control_engine, control_store, control_log)
    [control] = await control_engine.score([ev("p1", "next", 9, a=1.0)])

    store.states.clear()  # Redis emptied
    store.seen.clear()
    [result] = await engine.score([ev("p1", "next", 9, a=1.0)])
    assert isinstance(result, Outcome) and isinstance(control, Outcome)
    assert result.rehydrated and not control.rehydrated
    assert result.score.step == control.score.step == 7
    assert result.score.risk == control.score.risk
    # a retried event of the log is still a duplicate: the newest from the restored history
    [again] = await engine.score([ev("p1", "e5", 5, a=3.5)])
    assert isinstance(again, Outcome) and again.duplicate and again.score.step == 6


async def test_a_retried_event_that_rehydrates_is_a_duplicate() -> None:
    engine, store, log, _ = make()
    await live(engine, store, log)
    store.states.clear()
    store.seen.clear()
    [result] = await engine.score([ev("p1", "e5", 5, a=3.5)])
    assert isinstance(result, Outcome) and result.duplicate and result.rehydrated
    assert result.score.step == 6 and store.states["p1"].step == 6


async def test_unreachable_log_scores_a_missing_state_afresh() -> None:
    engine, _, log, _ = make()
    log.down = True
    [result] = await engine.score([ev("new", "e1", 0, a=1.0)])
    assert isinstance(result, Outcome) and result.score.step == 1 and not result.rehydrated


async def test_replay_writes_with_the_compare_and_set_and_retries_a_lost_one() -> None:
    engine, store, log, replayer = make()
    await live(engine, store, log)
    live_h = {e: store.states[e].tensors["h"].copy() for e in store.states}
    store.states.clear()
    report = await replayer.replay(["p1", "p2", "p3", "ghost"], store)
    assert report.installed == 3 and report.skipped == {"ghost": "no events in the log"}
    assert all(store.states[e].tensors["h"].tobytes() == live_h[e].tobytes() for e in live_h)


async def test_a_state_ahead_of_the_log_is_not_overwritten() -> None:
    engine, store, log, _ = make()
    await live(engine, store, log)
    [extra] = await engine.score([ev("p1", "undrained", 9, a=1.0)])  # still in the outbox
    assert isinstance(extra, Outcome)
    before = store.states["p1"]
    replayer = Replayer(FakeModel(), log, thresholds=LEVELS, dedup_history=3, max_rounds=2)
    report = await replayer.replay(["p1"], store)
    assert report.installed == 0 and "the log at 6" in report.skipped["p1"]
    assert store.states["p1"] is before


async def test_a_horizon_replays_only_the_recent_events() -> None:
    engine, store, log, _ = make()
    await live(engine, store, log)
    bounded = Replayer(FakeModel(), log, thresholds=LEVELS, dedup_history=3, horizon_hours=2.5)
    [result] = (await bounded.rebuild(["p1"])).values()
    assert result.events == 3 and result.state.step == 6  # hours 3, 4, 5 of 0..5
    assert not np.array_equal(result.state.tensors["h"], store.states["p1"].tensors["h"])


async def test_scores_logged_by_a_model_with_other_outputs_give_way_to_the_replayed_risk() -> None:
    """An upgrade may rename or add outputs: the rebuilt state's latest score must carry this
    model's outputs (its own risk at the last event), or no store could index it."""
    from dataclasses import replace

    engine, store, log, replayer = make()
    await live(engine, store, log)
    expected = {e: s.latest for e, s in store.states.items()}
    for score_id, record in list(log.scores.items()):  # as if logged by an older model
        old = replace(record.score, risk={"old_output": 0.5}, model_version="0.0.1")
        log.scores[score_id] = replace(record, score=old)
    rebuilt = await replayer.rebuild(["p1", "p2", "p3"])
    assert set(rebuilt) == {"p1", "p2", "p3"}
    for entity, result in rebuilt.items():
        latest, live_latest = result.state.latest, expected[entity]
        assert latest is not None and live_latest is not None
        assert latest.risk == live_latest.risk  # the replayed model's risk, as live
        assert latest.model_version == live_latest.model_version
        assert latest.step == live_latest.step and result.state.previous is None
    report = await replayer.replay(["p1", "p2", "p3"], store)
    assert report.installed == 3
