from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest
from riskstream.core.domain import EntityState, Event, Outcome
from riskstream.core.drain import drain_once
from riskstream.core.engine import RandomIds, ScoringEngine
from riskstream.core.errors import Contention, InvalidInput, OutOfOrder, UnknownEntity

from tests.unit.fakes import FakeLog, FakeModel, FakeOutbox, FakeStore

T0 = 1_800_000_000.0
NOW = T0 + 30 * 86_400.0  # the engine's clock: the events below lie in its past


def clock() -> float:
    return NOW


def make(**kwargs: object) -> tuple[ScoringEngine, FakeModel, FakeStore, FakeLog]:
    model, store, log = FakeModel(), FakeStore(), FakeLog()
    kwargs.setdefault("clock", clock)
    engine = ScoringEngine(model, store, log, **kwargs)  # type: ignore[arg-type]
    return engine, model, store, log


def ev(entity: str, event: str, hours: float, **values: float | None) -> Event:
    return Event(entity, event, T0 + hours * 3600, values)


def outcome(result: object) -> Outcome:
    assert isinstance(result, Outcome), result
    return result


async def test_a_stream_matches_stepping_the_model_by_hand() -> None:
    engine, _, store, _ = make()
    events = [ev("p1", "e1", 0, a=1.0), ev("p1", "e2", 2, b=3.0), ev("p1", "e3", 2.5, a=None)]
    results = [outcome(r) for e in events for r in await engine.score([e])]

    reference = FakeModel()
    h = np.zeros((1, 1, 2), np.float32)
    for i, (event, dt) in enumerate(zip(events, [0.0, 2.0, 0.5])):
        x = np.array([[event.values.get("a", np.nan), event.values.get("b", np.nan)]], np.float32)
        x = np.where(
            [[v is None for v in (event.values.get("a"), event.values.get("b"))]], np.nan, x
        )
        risk, nxt = reference.step(x, np.array([[dt]], np.float32), {"h": h})
        h = nxt["h"]
        assert results[i].score.risk["risk"] == pytest.approx(float(risk[0, 0]), abs=1e-7)
        assert results[i].score.step == i + 1
        assert not results[i].duplicate
    np.testing.assert_allclose(store.states["p1"].tensors["h"], h[:, 0, :])
    assert store.states["p1"].last_time == events[-1].time


async def test_duplicate_returns_the_first_result_and_does_not_advance() -> None:
    engine, _, store, _ = make()
    first = outcome((await engine.score([ev("p1", "e1", 0, a=1.0)]))[0])
    again = outcome((await engine.score([ev("p1", "e1", 5, a=9.0)]))[0])
    assert again.duplicate and again.score == first.score
    assert store.states["p1"].step == 1 and len(store.outbox) == 1


async def test_late_event_is_rejected_naming_both_times() -> None:
    engine, _, store, _ = make()
    await engine.score([ev("p1", "e1", 5)])
    [result] = await engine.score([ev("p1", "e2", 1)])
    assert isinstance(result, OutOfOrder) and result.status == 409
    assert "2027-01-15T09:00:00Z" in result.message and "2027-01-15T13:00:00Z" in result.message
    assert store.states["p1"].step == 1


async def test_late_event_found_in_the_log_is_a_duplicate() -> None:
    engine, _, store, log = make()
    first = outcome((await engine.score([ev("p1", "e1", 0)]))[0])
    await engine.score([ev("p1", "e2", 5)])
    store.seen.clear()  # fell out of the short dedup history
    await drain_once(FakeOutbox(store), log, limit=10)
    again = outcome((await engine.score([ev("p1", "e1", 0)]))[0])
    assert again.duplicate and again.score == first.score


async def test_late_event_can_be_taken_as_if_it_came_now() -> None:
    engine, _, store, _ = make(accept_late_events=True)
    await engine.score([ev("p1", "e1", 5, a=1.0)])
    h_before = store.states["p1"].tensors["h"].copy()
    late = outcome((await engine.score([ev("p1", "e2", 1, a=1.0)]))[0])
    assert late.score.step == 2
    assert store.states["p1"].last_time == T0 + 5 * 3600
    np.testing.assert_allclose(store.states["p1"].tensors["h"], h_before / 2 + [[1.0, 0.0]])


async def test_one_entity_twice_in_a_batch_takes_two_model_calls_in_order() -> None:
    engine, model, store, _ = make()
    batch = [ev("p1", "e1", 0, a=1.0), ev("p2", "x", 0), ev("p1", "e2", 1, a=2.0)]
    results = [outcome(r) for r in await engine.score(batch)]
    assert [r.score.step for r in results] == [1, 1, 2]
    assert model.batch_sizes == [2, 1]
    assert store.states["p1"].step == 2


async def test_a_lost_compare_and_set_is_retried_on_fresh_state() -> None:
    engine, _, store, _ = make()
    await engine.score([ev("p1", "e1", 0)])
    store.interfere.append("p1")
    result = outcome((await engine.score([ev("p1", "e2", 1)]))[0])
    assert result.score.step == 3  # another writer took step 2


async def test_endless_contention_gives_up_with_503() -> None:
    engine, _, store, _ = make(max_retries=3)
    await engine.score([ev("p1", "e1", 0)])
    store.interfere += ["p1"] * 3
    [result] = await engine.score([ev("p1", "e2", 1)])
    assert isinstance(result, Contention) and result.status == 503


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (ev("p1", "e1", 0, z=1.0), "values.z"),
        (ev("p1", "e1", 0, a=math.inf), "values.a"),
        (ev("p1", "e1", 0, a=math.nan), "values.a"),
        (ev("", "e1", 0), "entity_id"),
        (ev("p1", "", 0), "event_id"),
        (ev("p1", "e" * 129, 0), "event_id"),
        (ev("p\n1", "e1", 0), "entity_id"),
    ],
)
async def test_bad_input_names_the_field_and_stores_nothing(event: Event, field: str) -> None:
    engine, model, store, _ = make()
    [result] = await engine.score([event])
    assert isinstance(result, InvalidInput) and result.field == field
    assert store.states == {} and store.outbox == [] and model.batch_sizes == []


async def test_one_bad_event_does_not_fail_the_rest() -> None:
    engine, _, _store, _ = make()
    results = await engine.score([ev("p1", "e1", 0, z=1.0), ev("p2", "e1", 0, a=1.0)])
    assert isinstance(results[0], InvalidInput)
    assert outcome(results[1]).score.step == 1


async def test_a_new_model_version_restarts_the_recurrence_but_not_the_step_count() -> None:
    model, store, log = FakeModel("1"), FakeStore(), FakeLog()
    await ScoringEngine(model, store, log, clock=clock).score([ev("p1", "e1", 0, a=4.0)])
    v2 = ScoringEngine(FakeModel("2"), store, log, clock=clock)
    result = outcome((await v2.score([ev("p1", "e2", 3, a=1.0)]))[0])
    assert result.score.step == 2 and result.score.model_version == "2"
    np.testing.assert_allclose(store.states["p1"].tensors["h"], [[1.0, 0.0]])  # dt 0, h from 0


async def test_a_state_without_its_tensors_restarts_the_recurrence_but_not_the_step_count() -> None:
    engine, _, store, _ = make()
    await engine.score([ev("p1", "e1", 0, a=4.0)])
    kept = store.states["p1"]
    store.states["p1"] = EntityState(kept.step, kept.last_time, kept.model_key, {}, kept.latest)
    result = outcome((await engine.score([ev("p1", "e2", 3, a=1.0)]))[0])
    assert result.score.step == 2
    np.testing.assert_allclose(store.states["p1"].tensors["h"], [[1.0, 0.0]])  # dt 0, h from 0


async def test_forget_and_latest() -> None:
    engine, _, _, _ = make()
    await engine.score([ev("p1", "e1", 0)])
    assert (await engine.latest("p1")).step == 1
    await engine.forget("p1")
    with pytest.raises(UnknownEntity):
        await engine.latest("p1")
    with pytest.raises(UnknownEntity):
        await engine.forget("p1")


async def test_drain_moves_the_outbox_into_the_log_once() -> None:
    engine, _, store, log = make()
    await engine.score([ev(f"p{i}", "e1", 0) for i in range(5)])
    outbox = FakeOutbox(store)
    assert await drain_once(outbox, log, limit=3) == 3
    assert await drain_once(outbox, log, limit=3) == 2
    assert await drain_once(outbox, log, limit=3) == 0
    assert len(log.scores) == 5 and await outbox.backlog() == 0


def test_score_ids_are_distinct_32_hex_digit_strings_across_refills() -> None:
    ids = RandomIds()
    drawn = [ids() for _ in range(1_000)]  # 4 pools of 256 drawn from the OS
    assert len(set(drawn)) == len(drawn)
    assert all(re.fullmatch("[0-9a-f]{32}", i) for i in drawn)


def test_a_forked_child_draws_its_own_score_ids() -> None:
    ids = RandomIds()
    ids()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.write(write, "".join(ids() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 4096).decode()
    os.close(read)
    parent = "".join(ids() for _ in range(4))
    assert len(child) == 128 and child != parent
