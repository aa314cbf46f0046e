"""Explanations: why a logged score moved, by what each input of its event did to it.

For the score at step ``s`` of an entity's current stay, the state before the event is rebuilt
by replaying the stay's events up to ``s - 1`` (``Replayer.step_stays``: the live engine's
steps). Then one batched model call runs the event as logged and, for every input it carried,
the event with that input withheld: as if it had not been measured (NaN, exactly what the engine
feeds for a value absent or null; the model's feature memory then stands in for it). An input's
effect on an output is ``risk(full) - risk(withheld)``; inputs are ranked by its magnitude.

The risk recomputed for the full event is compared with the logged one: equal within
``tolerance`` it is ``reproduced``. It differs only when the state before the event is not what
it was live (the stay's earlier events scored by another model version, or a replay horizon);
the answer says so rather than hide it. A score logged by another model version than this
server's is refused (``ModelMismatch``): its effects would be another model's.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from riskstream.core.domain import LoggedScore, Score
from riskstream.core.errors import ModelMismatch, NotFound, UnknownEntity
from riskstream.core.ports import EventLog, RiskModel
from riskstream.core.replay import Replayer

# Above this many earlier events the replay runs on a worker thread (the event loop serves on).
_THREAD_EVENTS = 64
# |recomputed - logged| within which a logged risk counts as reproduced (float32 rounding).
TOLERANCE = 1e-5


@dataclass(frozen=True, slots=True)
class InputEffect:
    feature: str
    value: float
    effect: float  # risk with the input minus risk with it withheld


@dataclass(frozen=True, slots=True)
class OutputExplanation:
    risk: float  # as logged
    previous: float | None  # as logged at step - 1; None at step 1
    inputs: tuple[InputEffect, ...]  # by |effect|, largest first


@dataclass(frozen=True, slots=True)
class Explanation:
    score: Score  # the score explained, as logged
    outputs: Mapping[str, OutputExplanation]
    reproduced: bool  # the recomputed risk equals the logged one within ``TOLERANCE``
    difference: float  # the largest |recomputed - logged| over the outputs


class Explainer:
    def __init__(
        self,
        model: RiskModel,
        log: EventLog,
        replayer: Replayer,
        *,
        tolerance: float = TOLERANCE,
    ) -> None:
        self.model = model
        self._log = log
        self._replayer = replayer
        self._tolerance = tolerance
        manifest = model.manifest
        self._feature_index = {name: i for i, name in enumerate(manifest.feature_names)}
        self._state_specs = tuple((s.name, s.shape) for s in manifest.states)
        self._outputs = manifest.output_names

    async def explain(self, entity_id: str, step: int) -> Explanation:
        """The explanation of the score at ``step`` of the entity's current stay. Raises
        ``UnknownEntity`` (no stay in the log), ``NotFound`` (no such step in the stay: a score
        just answered reaches the log when the outbox is drained) or ``ModelMismatch``."""
        stay = (await self._log.stays([entity_id])).get(entity_id)
        if not stay:
            raise UnknownEntity(f"no logged events for entity {entity_id!r}", field="entity_id")
        record = next((r for r in reversed(stay) if r.score.step == step), None)
        if record is None:
            first, last = stay[0].score.step, stay[-1].score.step
            raise NotFound(
                f"entity {entity_id!r} has no step {step} in its current stay (steps {first} "
                f"to {last} are logged; a score just answered is logged within moments)",
                field="step",
            )
        manifest = self.model.manifest
        logged_key = f"{record.score.model_name}/{record.score.model_version}"
        if logged_key != manifest.key:
            raise ModelMismatch(
                f"step {step} was scored by {logged_key}; this server runs {manifest.key} and "
                "cannot explain another model's score",
                field="step",
            )
        before = [r for r in stay if r.score.step < step]
        if len(before) < _THREAD_EVENTS:
            return self._explain(entity_id, record, before)
        return await asyncio.to_thread(self._explain, entity_id, record, before)

    def _explain(
        self, entity_id: str, record: LoggedScore, before: Sequence[LoggedScore]
    ) -> Explanation:
        dt, states = self._state_before(entity_id, record, before)
        carried = [
            (name, float(value))
            for name, value in record.values.items()
            if value is not None and name in self._feature_index
        ]
        rows = 1 + len(carried)
        x = np.full((rows, len(self._feature_index)), np.nan, dtype=np.float32)
        for name, value in carried:
            x[:, self._feature_index[name]] = value
        for i, (name, _) in enumerate(carried, start=1):
            x[i, self._feature_index[name]] = np.nan  # row i: input i withheld
        inputs = {name: np.repeat(array, rows, axis=1) for name, array in states.items()}
        risk, _ = self.model.step(x, np.full((rows, 1), dt, dtype=np.float32), inputs)
        score = record.score
        previous = before[-1].score.risk if before else None
        difference = max(
            abs(float(risk[0, k]) - score.risk[name]) for k, name in enumerate(self._outputs)
        )
        outputs = {}
        for k, name in enumerate(self._outputs):
            full = float(risk[0, k])
            effects = [
                InputEffect(feature, value, full - float(risk[i, k]))
                for i, (feature, value) in enumerate(carried, start=1)
                if math.isfinite(float(risk[i, k]))  # a withheld row the model cannot score
            ]
            effects.sort(key=lambda e: (-abs(e.effect), e.feature))
            outputs[name] = OutputExplanation(
                risk=score.risk[name],
                previous=previous.get(name) if previous is not None else None,
                inputs=tuple(effects),
            )
        return Explanation(score, outputs, difference <= self._tolerance, difference)

    def _state_before(
        self, entity_id: str, record: LoggedScore, before: Sequence[LoggedScore]
    ) -> tuple[float, dict[str, np.ndarray]]:
        """``dt`` (hours) and the states (L, 1, H) the event was stepped from, as live: all-zero
        and 0 for a first event (or when no earlier event could be stepped); a late event taken
        as if it came at the entity's last time."""
        states = {
            name: np.zeros((shape[0], 1, shape[1]), dtype=np.float32)
            for name, shape in self._state_specs
        }
        if not before:
            return 0.0, states
        rebuilt = self._replayer.step_stays({entity_id: before})[entity_id]
        if rebuilt.events == 0:
            return 0.0, states
        for name in states:
            states[name][:, 0, :] = rebuilt.state.tensors[name]
        last = rebuilt.state.last_time
        return (max(record.score.event_time, last) - last) / 3600.0, states
