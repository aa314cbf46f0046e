"""Replay: an entity's recurrent state rebuilt from its logged events (the event log is the
source of truth for state; Redis holds a cache of it).

The events of many entities are stepped together through the model: round ``t`` runs the
``t``-th event of every entity that has one in one batched call, the states staying in memory
between an entity's steps. Each step is the live engine's step (``engine.py``): the same
inputs, ``dt`` from the previous event (0 and all-zero states for the first), a late event
taken as if it came at the entity's last time, an event the model gives a non-finite answer
skipped. The result is written to the state store once per entity, with the compare-and-set
of live events on the step count read before the log was read: an event committed meanwhile
makes the write fail and the entity is replayed again, so it is neither lost nor applied twice.

The model (``RiskModel``) is whichever the caller passes: the serving one for rehydration, or
another version (``riskstream replay --model``) into a state store of its own keys.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from riskstream.core.alerts import Threshold, next_alerts
from riskstream.core.domain import EntityState, Install, LoggedScore, Score
from riskstream.core.ports import EventLog, RiskModel, StateStore

# Above this many events a rebuild steps the model on a worker thread (the event loop serves on).
_THREAD_EVENTS = 256

Progress = Callable[[int, int], None]  # (entities done, events stepped) since the last call


@dataclass(frozen=True, slots=True)
class Rebuilt:
    """An entity's state after its stay's events, as the live engine would have left it."""

    state: EntityState  # step and latest/previous/alerts from the log; tensors from the model
    recent: tuple[Score, ...]  # the last scores, oldest first: the dedup history to restore
    seen: Mapping[str, Score]  # every event id of the stay: a retried one is a duplicate
    events: int  # model steps run (fewer than the stay's events with a horizon)
    risk: Mapping[str, float] = field(default_factory=dict)  # the model's, at the last event


@dataclass(slots=True)
class ReplayReport:
    entities: int = 0  # asked about
    installed: int = 0  # states written
    events: int = 0  # model steps run for the states written and the retries
    conflicts: int = 0  # writes lost to a live event, then replayed again
    skipped: dict[str, str] = field(default_factory=dict)  # entity -> why
    seconds: float = 0.0
    model_seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class Replayer:
    """``horizon_hours``: replay only the events within that many hours of each stay's last
    event, from all-zero states (the manifest's ``memory_horizon_hours``; None: the whole stay,
    which reproduces the live state exactly)."""

    def __init__(
        self,
        model: RiskModel,
        log: EventLog,
        *,
        thresholds: Mapping[str, Threshold],
        dedup_history: int,
        batch: int = 512,
        horizon_hours: float | None = None,
        max_rounds: int = 20,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.model = model
        self._log = log
        self._thresholds = dict(thresholds)
        self._history = dedup_history
        self._batch = batch
        self._horizon_s = horizon_hours * 3600.0 if horizon_hours is not None else None
        self._max_rounds = max_rounds
        self._clock = clock
        manifest = model.manifest
        self._key = manifest.key
        self._feature_index = {name: i for i, name in enumerate(manifest.feature_names)}
        self._state_specs = tuple((s.name, s.shape) for s in manifest.states)
        self.model_seconds = 0.0

    # -- rebuilding: log in, states out ---------------------------------------------------------

    async def rebuild(self, entity_ids: Sequence[str]) -> dict[str, Rebuilt]:
        """The rebuilt state of each entity that has a stay in the log (others are absent)."""
        stays = await self._log.stays(entity_ids)
        if not stays:
            return {}
        if sum(map(len, stays.values())) < _THREAD_EVENTS:
            return self.step_stays(stays)
        return await asyncio.to_thread(self.step_stays, stays)

    def step_stays(self, stays: Mapping[str, Sequence[LoggedScore]]) -> dict[str, Rebuilt]:
        """Step every stay through the model, up to ``batch`` entities per call. Each entity
        holds a slot of the batch until its last event, then the next entity (longest first)
        takes the slot with all-zero states, so calls stay full until the queue runs dry."""
        replayed = {entity: self._replayed(stay) for entity, stay in stays.items()}
        order = sorted((e for e in replayed if replayed[e]), key=lambda e: -len(replayed[e]))
        rebuilt = self._step_slots(order, replayed)
        finished = {entity: self._finish(stays[entity], r) for entity, r in rebuilt.items()}
        return {entity: r for entity, r in finished.items() if r is not None}

    def _replayed(self, stay: Sequence[LoggedScore]) -> Sequence[LoggedScore]:
        """The events to step: the whole stay, or its tail within the horizon."""
        if self._horizon_s is None or not stay:
            return stay
        since = stay[-1].score.event_time - self._horizon_s
        first = len(stay)
        while first > 0 and stay[first - 1].score.event_time >= since:
            first -= 1
        return stay[first:]

    def _step_slots(
        self, order: Sequence[str], events: Mapping[str, Sequence[LoggedScore]]
    ) -> dict[str, Rebuilt]:
        slots = min(self._batch, len(order))
        features = len(self._feature_index)
        outputs = self.model.manifest.output_names
        states = {
            name: np.zeros((shape[0], slots, shape[1]), dtype=np.float32)
            for name, shape in self._state_specs
        }
        held: list[str | None] = [None] * slots
        at = [0] * slots  # the slot's entity's next event
        last = [0.0] * slots
        stepped = [0] * slots
        risk_at_end: list[dict[str, float]] = [{} for _ in range(slots)]
        queue = iter(order)
        out: dict[str, Rebuilt] = {}

        def take(slot: int) -> None:
            held[slot] = next(queue, None)
            at[slot], last[slot], stepped[slot], risk_at_end[slot] = 0, 0.0, 0, {}
            for array in states.values():
                array[:, slot] = 0.0

        for slot in range(slots):
            take(slot)
        while active := [slot for slot in range(slots) if held[slot] is not None]:
            x = np.full((len(active), features), np.nan, dtype=np.float32)
            dt = np.zeros((len(active), 1), dtype=np.float32)
            times = [0.0] * len(active)
            for row, slot in enumerate(active):
                record = events[held[slot]][at[slot]]  # type: ignore[index]
                for name, value in record.values.items():
                    if value is not None:
                        x[row, self._feature_index[name]] = value
                moment = record.score.event_time
                if stepped[slot]:
                    moment = max(moment, last[slot])  # a late event: as if it came now
                    dt[row, 0] = (moment - last[slot]) / 3600.0
                times[row] = moment
            full = len(active) == slots
            inputs = {
                name: array if full else np.ascontiguousarray(array[:, active])
                for name, array in states.items()
            }
            started = self._clock()
            risk, next_states = self.model.step(x, dt, inputs)
            self.model_seconds += self._clock() - started
            ok = np.isfinite(risk).all(axis=1)
            for name in states:
                ok &= np.isfinite(next_states[name]).all(axis=(0, 2))
            rows = np.flatnonzero(ok)  # a refused event (non-finite) changes nothing, as live
            for name, array in states.items():
                if full and len(rows) == slots:
                    array[...] = next_states[name]
                else:
                    array[:, np.asarray(active)[rows]] = next_states[name][:, rows]
            for row in rows.tolist():
                slot = active[row]
                last[slot] = times[row]
                stepped[slot] += 1
                risk_at_end[slot] = dict(zip(outputs, risk[row].tolist()))
            for slot in active:
                entity = held[slot]
                assert entity is not None
                at[slot] += 1
                if at[slot] == len(events[entity]):
                    tensors = {name: states[name][:, slot].copy() for name in states}
                    state = EntityState(0, last[slot], self._key, tensors)
                    out[entity] = Rebuilt(state, (), {}, stepped[slot], risk_at_end[slot])
                    take(slot)
        return out

    def _finish(self, stay: Sequence[LoggedScore], partial: Rebuilt) -> Rebuilt | None:
        """Step count, scores, alerts and dedup history come from the log: they are what the
        service answered. A score logged by a model with other outputs (an upgrade) cannot be
        the state's latest: the replayed model's own risk at the last event stands in for it,
        and such a previous score is left out. None if there is no such risk either (every
        event of the stay refused by this model): nothing to install."""
        scores = [record.score for record in stay]
        alerts: dict[str, float] = {}
        for score in scores:
            alerts = next_alerts(alerts, score.risk, self._thresholds, score.event_time)
        outputs = self.model.manifest.output_names

        def ours(score: Score) -> bool:
            return all(output in score.risk for output in outputs)

        latest = scores[-1]
        if not ours(latest):
            if not partial.risk:
                return None
            manifest = self.model.manifest
            latest = replace(
                latest,
                risk=dict(partial.risk),
                model_name=manifest.name,
                model_version=manifest.version,
            )
        previous = scores[-2] if len(scores) > 1 and ours(scores[-2]) else None
        state = partial.state
        state.step = scores[-1].step
        state.latest = latest
        state.previous = previous
        state.alerts = alerts
        if partial.events == 0:  # nothing stepped (all refused): a fresh state at the last time
            state.last_time = max(s.event_time for s in scores)
        recent = tuple(scores[-self._history :])
        seen = {s.event_id: s for s in scores}
        return Rebuilt(state, recent, seen, partial.events, partial.risk)

    # -- replaying: rebuilt states written, with the live compare-and-set ---------------------

    async def replay(
        self,
        entity_ids: Sequence[str],
        store: StateStore,
        *,
        progress: Progress | None = None,
    ) -> ReplayReport:
        """Rebuild these entities and write each state once. A write that loses to a live event
        is replayed again; an entity whose stored step is ahead of the log (its newest scores
        still in the outbox) is retried after a pause, up to ``max_rounds`` rounds, then
        skipped and named in the report."""
        report = ReplayReport(entities=len(entity_ids))
        started = self._clock()
        model_before = self.model_seconds
        for start in range(0, len(entity_ids), self._batch):
            events_before = report.events
            await self._replay_chunk(list(entity_ids[start : start + self._batch]), store, report)
            if progress is not None:
                progress(min(self._batch, len(entity_ids) - start), report.events - events_before)
        report.seconds = self._clock() - started
        report.model_seconds = self.model_seconds - model_before
        return report

    async def replay_all(
        self, store: StateStore, *, progress: Progress | None = None, page: int = 5_000
    ) -> ReplayReport:
        """Every entity with a stay in the log, ``page`` ids at a time (in id order)."""
        total = ReplayReport()
        started = self._clock()
        after: str | None = None
        while ids := await self._log.entity_ids(after=after, limit=page):
            part = await self.replay(ids, store, progress=progress)
            total.entities += part.entities
            total.installed += part.installed
            total.events += part.events
            total.conflicts += part.conflicts
            total.skipped.update(part.skipped)
            total.model_seconds += part.model_seconds
            after = ids[-1]
        total.seconds = self._clock() - started
        return total

    async def _replay_chunk(
        self, pending: list[str], store: StateStore, report: ReplayReport
    ) -> None:
        behind: dict[str, str] = {}
        for attempt in range(self._max_rounds):
            if not pending:
                return
            if attempt and behind:
                await asyncio.sleep(self._pause(attempt))
            # the version first, then the log: whatever commits after this read fails the CAS
            snapshots = await store.load([(entity, "") for entity in pending])
            rebuilt = await self.rebuild(pending)
            installs: list[Install] = []
            retry: list[str] = []
            behind = {}
            for entity, snapshot in zip(pending, snapshots):
                result = rebuilt.get(entity)
                if result is None:
                    report.skipped[entity] = "no events in the log"
                    continue
                report.events += result.events
                stored = snapshot.state.step if snapshot.state is not None else 0
                if result.state.step < stored:
                    behind[entity] = (
                        f"the stored state is at step {stored}, the log at {result.state.step}"
                    )
                    retry.append(entity)
                    continue
                installs.append(Install(stored, result.state, result.recent))
            done = await store.install(installs) if installs else []
            for install, ok in zip(installs, done):
                assert install.state.latest is not None  # a rebuilt state has its last score
                entity = install.state.latest.entity_id
                if ok:
                    report.installed += 1
                else:
                    report.conflicts += 1
                    retry.append(entity)
            pending = retry
        for entity in pending:
            report.skipped[entity] = behind.get(entity, "the state kept changing under the replay")

    @staticmethod
    def _pause(attempt: int) -> float:
        return min(0.1 * attempt, 1.0)
