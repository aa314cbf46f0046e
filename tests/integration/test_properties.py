"""Property: concurrent interleavings, retries and late events end in the state and the SQL log
of the accepted events applied one by one in their accepted order.

hypothesis draws a few entities, each with a handful of events (times drawn at random, so some
are earlier than the entity's last: late), re-sends of some of them (the same event id: a retry),
a shuffled order, and a grouping into rounds: the requests of a round are posted at once, each
send on the single-event route or in one of a few bulk requests. The real service in-process
(real Redis, real SQL, the tiny ONNX model, micro-batching on) answers them. Then:

- every answer is 200 or 409 (no 5xx, no contention);
- each event id is answered 200 as new at most once, and every other 200 answer for it is
  ``duplicate: true`` with the same step, time and risk;
- an event earlier than a score answered in an earlier round is 409 unless its id was accepted;
  every 409 is an event earlier than some accepted one, and never of an accepted id;
- the accepted events, ordered by step, have steps 1..n and times that never go back;
- their risks, the entity's latest risk, its stored state tensors and its SQL log (once drained)
  equal an offline ONNX rollout of the accepted events in that order, with the same ``dt``.

Bounded and deterministic: ``derandomize=True``, few examples, no deadline. Each example uses
entity ids of its own, so the one service of the test serves all examples.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from riskstream.adapters.onnx_model import OnnxRiskModel

from tests.support.model import TINY_MODEL_DIR
from tests.support.service import Running

T0 = 1_790_000_000
# name -> the plausible range the manifest may declare (values outside it are refused)
RANGES: dict[str, tuple[float, float]] = {
    f["name"]: tuple(f.get("range", (0.0, 200.0)))
    for f in json.loads((TINY_MODEL_DIR / "manifest.json").read_text())["features"]
}
FEATURES = list(RANGES)
LOG_WAIT_S = 20.0
ATOL = 1e-5  # a micro-batch runs several entities through the model at once


@dataclass(frozen=True)
class Sent:
    entity: int  # index into the example's entities
    event_id: str
    time: int
    values: dict[str, float | None]


@dataclass
class Scenario:
    rounds: list[list[tuple[Sent, int]]]  # per round: (event, request slot: 0 single, k bulk k)

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        return "\n".join(
            f"round {r}: "
            + ", ".join(
                f"{'single' if slot == 0 else f'bulk{slot}'}:E{s.entity}/{s.event_id}@{s.time - T0}"
                for s, slot in sends
            )
            for r, sends in enumerate(self.rounds)
        )


_values = st.sets(st.sampled_from(FEATURES[:10]), max_size=4).flatmap(
    lambda names: st.fixed_dictionaries(
        {
            name: st.one_of(
                st.none(),
                st.floats(min_value=RANGES[name][0], max_value=RANGES[name][1], allow_nan=False),
            )
            for name in sorted(names)
        }
    )
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    sends: list[Sent] = []
    for entity in range(draw(st.integers(min_value=1, max_value=3))):
        events = [
            Sent(entity, f"ev{j}", T0 + 60 * draw(st.integers(0, 90)), draw(_values))
            for j in range(draw(st.integers(min_value=1, max_value=8)))
        ]
        resent = draw(st.lists(st.sampled_from(events), max_size=4))
        sends += events + resent
    order = draw(st.permutations(sends))
    rounds: list[list[tuple[Sent, int]]] = []
    for i, sent in enumerate(order):
        if i == 0 or draw(st.integers(0, 2)) == 0:  # a new round about every third send
            rounds.append([])
        rounds[-1].append((sent, draw(st.integers(min_value=0, max_value=2))))
    return Scenario(rounds)


@dataclass
class Answer:
    sent: Sent
    round: int
    status: int
    body: dict[str, Any] = field(default_factory=dict)


async def _post_round(
    service: Running, entities: list[str], sends: list[tuple[Sent, int]], round_no: int
) -> list[Answer]:
    """All requests of a round at once: one per single send, one per bulk slot."""

    async def single(sent: Sent) -> list[Answer]:
        body = {"event_id": sent.event_id, "time": sent.time, "values": sent.values}
        response = await service.client.post(
            f"/v1/entities/{entities[sent.entity]}/events", json=body
        )
        return [Answer(sent, round_no, response.status_code, response.json())]

    async def bulk(batch: list[Sent]) -> list[Answer]:
        items = [
            {
                "entity_id": entities[s.entity],
                "event_id": s.event_id,
                "time": s.time,
                "values": s.values,
            }
            for s in batch
        ]
        response = await service.client.post("/v1/events", json=items)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["index"] for r in results] == list(range(len(batch)))
        return [Answer(s, round_no, r["status"], r) for s, r in zip(batch, results)]

    calls = [single(sent) for sent, slot in sends if slot == 0]
    for slot in sorted({slot for _, slot in sends if slot > 0}):
        calls.append(bulk([sent for sent, k in sends if k == slot]))
    return [answer for answers in await asyncio.gather(*calls) for answer in answers]


def _rollout(model: OnnxRiskModel, accepted: list[Answer]) -> tuple[np.ndarray, dict]:
    """The accepted events through the model one at a time, as the engine steps them."""
    index = {name: i for i, name in enumerate(model.manifest.feature_names)}
    states = {
        s.name: np.zeros((s.shape[0], 1, s.shape[1]), np.float32) for s in model.manifest.states
    }
    risks = []
    previous: int | None = None
    for answer in accepted:
        x = np.full((1, len(index)), np.nan, np.float32)
        for name, value in answer.sent.values.items():
            if value is not None:
                x[0, index[name]] = value
        hours = 0.0 if previous is None else (answer.sent.time - previous) / 3600.0
        risk, states = model.step(x, np.array([[hours]], np.float32), states)
        risks.append(risk[0])
        previous = answer.sent.time
    return np.array(risks), states


async def _logged(service: Running, entity_id: str, count: int) -> list[dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + LOG_WAIT_S
    while True:
        response = await service.client.get(
            f"/v1/entities/{entity_id}/scores", params={"limit": 1000}
        )
        assert response.status_code == 200, response.text
        scores: list[dict[str, Any]] = response.json()["scores"]
        if len(scores) >= count or asyncio.get_running_loop().time() > deadline:
            return scores
        await asyncio.sleep(0.05)


async def _check_entity(
    service: Running, model: OnnxRiskModel, entity_id: str, answers: list[Answer]
) -> None:
    outputs = list(model.manifest.output_names)
    assert {a.status for a in answers} <= {200, 409}, [(a.status, a.body) for a in answers]
    new = [a for a in answers if a.status == 200 and a.body["duplicate"] is False]
    accepted_ids = [a.sent.event_id for a in new]
    assert len(accepted_ids) == len(set(accepted_ids)), f"answered new twice: {accepted_ids}"
    first = {a.sent.event_id: a for a in new}
    for a in answers:
        if a.status == 200 and a.body["duplicate"]:
            original = first.get(a.sent.event_id)
            assert original is not None, f"{a.sent.event_id} duplicate of nothing answered"
            for key in ("step", "time", "risk", "scored_at"):
                assert a.body[key] == original.body[key], (key, a.body, original.body)
        if a.status == 409:
            assert a.body["error"]["code"] == "out_of_order", a.body
            assert a.sent.event_id not in first, f"{a.sent.event_id} both 409 and accepted"
            assert any(a.sent.time < b.sent.time for b in new), f"409 for no reason: {a}"

    accepted = sorted(new, key=lambda a: a.body["step"])
    assert [a.body["step"] for a in accepted] == list(range(1, len(accepted) + 1))
    times = [a.sent.time for a in accepted]
    assert times == sorted(times), f"accepted times went back: {times}"
    for a in answers:  # late against what an earlier round had already answered
        before = [b.sent.time for b in new if b.round < a.round]
        known = {b.sent.event_id for b in new if b.round < a.round}
        if before and a.sent.time < max(before):
            expected = 200 if a.sent.event_id in known else 409
            assert a.status == expected, f"{a.sent} after {max(before) - T0}: {a.status}"

    risks, states = _rollout(model, accepted)
    served = np.array([[a.body["risk"][o] for o in outputs] for a in accepted])
    np.testing.assert_allclose(served, risks, atol=ATOL, rtol=0)

    latest = await service.client.get(f"/v1/entities/{entity_id}/risk")
    assert latest.status_code == 200, latest.text
    assert latest.json()["step"] == len(accepted)
    assert latest.json()["risk"] == accepted[-1].body["risk"]
    stored = await service.services.store.get(entity_id)
    assert stored is not None and stored.step == len(accepted)
    for name, tensor in states.items():
        np.testing.assert_allclose(stored.tensors[name], tensor[:, 0, :], atol=ATOL, rtol=0)

    logged = await _logged(service, entity_id, len(accepted))
    assert [(s["event_id"], s["step"], s["time"]) for s in logged] == [
        (a.sent.event_id, a.body["step"], a.body["time"]) for a in accepted
    ]
    np.testing.assert_allclose(
        np.array([[s["risk"][o] for o in outputs] for s in logged]), served, atol=1e-9, rtol=0
    )


@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
async def test_concurrent_retries_and_late_events_end_as_the_accepted_ones_in_order(
    service: Running, tiny_model_dir: Path, scenario: Scenario
) -> None:
    model = OnnxRiskModel(tiny_model_dir)
    run = uuid.uuid4().hex[:10]
    count = 1 + max(s.entity for sends in scenario.rounds for s, _ in sends)
    entities = [f"prop-{run}-{k}" for k in range(count)]
    answers: list[Answer] = []
    for round_no, sends in enumerate(scenario.rounds):
        answers += await _post_round(service, entities, sends, round_no)
    for k, entity_id in enumerate(entities):
        await _check_entity(service, model, entity_id, [a for a in answers if a.sent.entity == k])
