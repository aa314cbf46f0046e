"""The scoring engine: a batch of events in, one recurrence step per event, scores out.

It knows nothing of HTTP, Redis or SQL: it talks to a ``RiskModel``, a ``StateStore`` and a
``ScoreLog`` through the ports in ``riskstream.core.ports``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import NoReturn

import numpy as np

from riskstream.core.alerts import Threshold, next_alerts
from riskstream.core.domain import (
    ID_PATTERN,
    Commit,
    EntityState,
    Event,
    Install,
    LoggedScore,
    Outcome,
    Score,
    Snapshot,
)
from riskstream.core.errors import (
    Contention,
    InvalidInput,
    OutOfOrder,
    RiskstreamError,
    Unavailable,
    UnknownEntity,
)
from riskstream.core.ports import RiskModel, ScoreLog, StateStore
from riskstream.core.replay import Replayer
from riskstream.core.stats import EngineStats, NoStats

log = logging.getLogger(__name__)

Result = Outcome | RiskstreamError

# Above this batch size the model runs on a worker thread so the event loop keeps serving.
_THREAD_BATCH = 32
# Late events looked up in the score log at once, per round (the SQL pool has a few connections).
_LOOKUPS = 4

# The model computes in float32: a larger value would become infinity inside the graph.
FLOAT32_MAX = 3.4028234663852886e38
# 1900-01-01T00:00:00Z: the default earliest event time (setting EVENT_TIME_MIN).
EVENT_TIME_MIN = -2_208_988_800.0
_ID = re.compile(ID_PATTERN)
_ID_CHARACTERS = "letters, digits and . _ ~ : @ - (starting with a letter or a digit)"


def _iso(t: float) -> str:
    """ISO 8601 in UTC; a time no datetime can hold (a stored state from before the time window
    was enforced) still gets a message, as epoch seconds."""
    try:
        return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{t!r} epoch seconds"


class RandomIds:
    """128-bit random ids in hex, drawn from the OS 4 KB at a time: ``uuid4()`` costs a system
    call and a ``UUID`` object per score, a few percent of a step at full load. A forked child
    draws its own pool, so parent and child never hand out the same ids."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        self._pid = os.getpid()

    def __call__(self) -> str:
        if self._at >= len(self._pool) or self._pid != os.getpid():
            self._pool, self._at, self._pid = os.urandom(4096), 0, os.getpid()
        self._at += 16
        return self._pool[self._at - 16 : self._at].hex()


@dataclass(frozen=True, slots=True)
class _Planned:
    index: int  # position in the round
    event: Event
    prior: EntityState | None
    fresh: bool  # no usable recurrent state: new entity, or state of another model version
    time: float  # the time the state moves to


class ScoringEngine:
    def __init__(
        self,
        model: RiskModel,
        store: StateStore,
        log: ScoreLog,
        *,
        accept_late_events: bool = False,
        max_retries: int = 100,
        max_id_length: int = 128,
        event_time_min: float = EVENT_TIME_MIN,
        event_time_max_ahead_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        new_score_id: Callable[[], str] | None = None,
        stats: EngineStats | None = None,
        thresholds: Mapping[str, Threshold] | None = None,
        replayer: Replayer | None = None,
    ) -> None:
        self.thresholds = dict(thresholds or {})
        self._replayer = replayer
        self.stats: EngineStats = stats or NoStats()
        self.model = model
        self._store = store
        self._log = log
        self._accept_late = accept_late_events
        self._max_retries = max_retries
        self._max_id_length = max_id_length
        self._time_min = event_time_min
        self._max_ahead = event_time_max_ahead_s
        self._clock = clock
        self._new_score_id = new_score_id or RandomIds()
        manifest = model.manifest
        self._feature_index = {name: i for i, name in enumerate(manifest.feature_names)}
        self._ranges = {f.name: (f.range, f.unit) for f in manifest.features if f.range}
        # per feature, the values ``check`` lets through: its declared range within float32's
        self._bounds = {
            f.name: (
                max(f.range[0], -FLOAT32_MAX) if f.range else -FLOAT32_MAX,
                min(f.range[1], FLOAT32_MAX) if f.range else FLOAT32_MAX,
            )
            for f in manifest.features
        }
        self._outputs = manifest.output_names
        self._state_specs = tuple((s.name, s.shape) for s in manifest.states)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    def close(self) -> None:
        self._executor.shutdown(wait=False)

    # -- validation -----------------------------------------------------------------------

    def check(self, event: Event) -> None:
        """Raise ``InvalidInput`` naming the field unless the event lies in the input domain:
        ids of the one id character set, values the model's float32 can hold (and inside the
        manifest's plausible range of the feature, if it declares one), a time in the window.
        Whatever passes gives the model a finite, bounded ``dt`` and renders everywhere.

        It runs for every event, so the common case is one comparison per value and one for the
        time (NaN fails every comparison); the messages are worked out only for a refusal."""
        max_length = self._max_id_length
        for field, ident in (("entity_id", event.entity_id), ("event_id", event.event_id)):
            if not 0 < len(ident) <= max_length or _ID.fullmatch(ident) is None:
                self._refuse_id(field, ident)
        bounds = self._bounds
        for name, value in event.values.items():
            limits = bounds.get(name)
            if limits is None or (value is not None and not limits[0] <= value <= limits[1]):
                self._refuse_value(name, value)
        t = event.time
        if not self._time_min <= t <= self._clock() + self._max_ahead:
            self._refuse_time(t)

    def _refuse_id(self, field: str, ident: str) -> NoReturn:
        if not ident:
            raise InvalidInput(f"{field} must not be empty", field=field)
        if len(ident) > self._max_id_length:
            raise InvalidInput(
                f"{field} is {len(ident)} characters long; at most {self._max_id_length}",
                field=field,
            )
        raise InvalidInput(
            f"{field} {ident!r} is not an id: ids take {_ID_CHARACTERS}", field=field
        )

    def _refuse_value(self, name: str, value: float | None) -> NoReturn:
        field = f"values.{name}"
        if name not in self._feature_index:
            raise InvalidInput(
                f"unknown feature {name!r}; the model takes {len(self._feature_index)} "
                "features, listed at GET /v1/model",
                field=field,
            )
        assert value is not None
        if not math.isfinite(value):
            raise InvalidInput(f"{value!r} is not a finite number", field=field)
        if abs(value) > FLOAT32_MAX:
            raise InvalidInput(
                f"{value!r} is beyond the model's 32-bit floats (at most {FLOAT32_MAX!r} "
                "in magnitude)",
                field=field,
            )
        (low, high), unit = self._ranges[name]
        units = f" {unit}" if unit else ""
        raise InvalidInput(
            f"{value!r} is outside the plausible range of {name}, "
            f"[{low:g}, {high:g}]{units} (the model's manifest, GET /v1/model)",
            field=field,
        )

    def _refuse_time(self, t: float) -> NoReturn:
        if not math.isfinite(t):
            raise InvalidInput("time is not a finite timestamp", field="time")
        latest = self._clock() + self._max_ahead
        raise InvalidInput(
            f"time {_iso(t)} is outside the accepted window: from {_iso(self._time_min)} "
            f"to {self._max_ahead:g} s after the server's clock (now up to {_iso(latest)})",
            field="time",
        )

    # -- scoring ----------------------------------------------------------------------------

    async def score(self, events: Sequence[Event]) -> list[Result]:
        """Apply each event exactly once; one entity's events in the order given.

        Every result is an ``Outcome`` or the ``RiskstreamError`` of that event alone (refused
        input, out of order, its late-event lookup failing, the model unable to score it). A
        failure of a backing service that concerns the whole batch (loading or committing state)
        is raised, not returned: then no event is known to be applied.
        """
        results: list[Result | None] = [None] * len(events)
        attempts = [0] * len(events)
        pending: list[int] = []
        for i, event in enumerate(events):
            try:
                self.check(event)
            except InvalidInput as exc:
                results[i] = exc
            else:
                pending.append(i)
        while pending:
            seen: set[str] = set()
            round_: list[int] = []
            later: list[int] = []
            for i in pending:
                entity = events[i].entity_id
                (later if entity in seen else round_).append(i)
                seen.add(entity)
            round_results = await self._step_round([events[i] for i in round_])
            retry: list[int] = []
            for i, result in zip(round_, round_results):
                if result is not None:
                    results[i] = result
                    continue
                attempts[i] += 1
                if attempts[i] >= self._max_retries:
                    results[i] = Contention(
                        f"entity {events[i].entity_id!r} changed under {attempts[i]} attempts"
                    )
                else:
                    retry.append(i)
            pending = sorted(retry + later)
        return [r for r in results if r is not None]

    async def _step_round(self, events: Sequence[Event]) -> list[Result | None]:
        """One round: distinct entities. ``None`` marks a lost compare-and-set: retry it.

        Every failure that concerns one event (its late-event lookup failing, the model giving
        it a non-finite score) is that event's result; the others go on and are committed."""
        snapshots = await self._store.load([(e.entity_id, e.event_id) for e in events])
        results: list[Result | None] = [None] * len(events)
        rehydrated: set[int] = set()
        lost: set[int] = set()
        if self._replayer is not None:
            await self._rehydrate(self._replayer, events, snapshots, rehydrated, lost)
        planned: list[_Planned] = []
        late: list[int] = []
        for i, (event, snapshot) in enumerate(zip(events, snapshots)):
            if i not in lost:
                results[i] = self._plan(i, event, snapshot, planned, late)
        if late:
            await self._judge_late(events, snapshots, late, results)
        if planned:
            await self._step_planned(planned, results)
        for i in rehydrated:
            if isinstance(outcome := results[i], Outcome):
                results[i] = replace(outcome, rehydrated=True)
        return results

    async def _rehydrate(
        self,
        replayer: Replayer,
        events: Sequence[Event],
        snapshots: list[Snapshot],
        rehydrated: set[int],
        lost: set[int],
    ) -> None:
        """Rebuild from the event log the state of each entity that has none in the store (Redis
        emptied, the state expired) or one of another model version, and install it with the
        compare-and-set; the event is then planned on it (``rehydrated``), or retried if another
        writer won (``lost``). An entity the log knows nothing of is new: nothing to do.

        If the log cannot be read (the database unreachable) such an entity is scored as before
        rehydration existed, afresh, rather than failing every new entity's first event while
        the database is away; that is logged and counted (``rehydration_failed``)."""
        key = self.model.manifest.key
        candidates = [
            i
            for i, snapshot in enumerate(snapshots)
            if snapshot.seen is None and (snapshot.state is None or snapshot.state.model_key != key)
        ]
        if not candidates:
            return
        try:
            rebuilt = await replayer.rebuild([events[i].entity_id for i in candidates])
        except Unavailable:
            self.stats.rehydration_failed(len(candidates))
            log.warning(
                "the event log is unreachable: %d entities without a state of %s scored afresh",
                len(candidates),
                key,
            )
            return
        chosen: list[int] = []
        installs: list[Install] = []
        for i in candidates:
            found = rebuilt.get(events[i].entity_id)
            prior = snapshots[i].state
            stored = prior.step if prior is not None else 0
            if found is None or found.state.step < stored:
                continue  # new, or the log is behind the store (a model switch mid-drain)
            chosen.append(i)
            installs.append(Install(stored, found.state, found.recent))
        if not installs:
            return
        done = await self._store.install(installs)
        for i, ok in zip(chosen, done):
            if not ok:
                lost.add(i)
                continue
            found = rebuilt[events[i].entity_id]
            snapshots[i] = Snapshot(found.state, found.seen.get(events[i].event_id))
            rehydrated.add(i)
        steps = sum(rebuilt[events[i].entity_id].events for i in rehydrated)
        self.stats.rehydrated(len(rehydrated), steps)

    async def _step_planned(
        self, planned: Sequence[_Planned], results: list[Result | None]
    ) -> None:
        """Step the planned events through the model and commit them; their results."""
        x, dt, states = self._inputs(planned)
        risk, next_states = await self._run_model(x, dt, states)
        finite = self._finite(risk, next_states)
        rows = [b for b, ok in enumerate(finite.tolist()) if ok]
        for bad in np.flatnonzero(~finite).tolist():
            results[planned[bad].index] = InvalidInput(
                "the model could not score these inputs: it gave a non-finite risk or state, "
                "which is not stored",
                field="values",
            )
        if not rows:
            return
        commits = self._commits(planned, rows, risk, next_states)
        committed = await self._store.commit(commits)
        for b, commit, ok in zip(rows, commits, committed):
            if ok:
                results[planned[b].index] = Outcome(commit.logged.score, duplicate=False)
        conflicts = len(committed) - sum(committed)
        if conflicts:
            self.stats.cas_conflicts(conflicts)

    def _plan(
        self, i: int, event: Event, snapshot: Snapshot, planned: list[_Planned], late: list[int]
    ) -> Result | None:
        """The event's result if it needs no model step (a duplicate); else it joins ``planned``,
        or ``late`` when only the score log can tell a late duplicate from an out-of-order event."""
        if snapshot.seen is not None:
            return Outcome(snapshot.seen, duplicate=True)
        prior = snapshot.state
        fresh = (
            prior is None
            or prior.model_key != self.model.manifest.key
            or any(name not in prior.tensors for name, _ in self._state_specs)
        )
        new_time = event.time
        if prior is not None and event.time < prior.last_time:
            if not self._accept_late:
                late.append(i)
                return None
            new_time = prior.last_time  # taken as if it came now
        planned.append(_Planned(i, event, prior, fresh, new_time))
        return None

    async def _judge_late(
        self,
        events: Sequence[Event],
        snapshots: Sequence[Snapshot],
        late: Sequence[int],
        results: list[Result | None],
    ) -> None:
        """Look late events up in the score log, a few at a time: found, a duplicate; not
        found, out of order. A lookup that fails (the database unreachable) fails its event."""
        gate = asyncio.Semaphore(_LOOKUPS)

        async def find(i: int) -> Score | None:
            async with gate:
                return await self._log.find(events[i].entity_id, events[i].event_id)

        found = await asyncio.gather(*(find(i) for i in late), return_exceptions=True)
        for i, earlier in zip(late, found):
            if isinstance(earlier, RiskstreamError):
                results[i] = earlier
            elif isinstance(earlier, BaseException):  # a bug, not a fault of this event
                raise earlier
            elif earlier is not None:
                results[i] = Outcome(earlier, duplicate=True)
            else:
                prior = snapshots[i].state
                assert prior is not None
                results[i] = OutOfOrder(
                    f"event time {_iso(events[i].time)} is earlier than the entity's last event "
                    f"at {_iso(prior.last_time)}",
                    field="time",
                )

    def _inputs(
        self, planned: Sequence[_Planned]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        batch = len(planned)
        x = np.full((batch, len(self._feature_index)), np.nan, dtype=np.float32)  # (B, F)
        dt = np.zeros((batch, 1), dtype=np.float32)  # (B, 1)
        states = {
            name: np.zeros((shape[0], batch, shape[1]), dtype=np.float32)  # (L, B, H)
            for name, shape in self._state_specs
        }
        for b, plan in enumerate(planned):
            for name, value in plan.event.values.items():
                if value is not None:
                    x[b, self._feature_index[name]] = value
            if plan.fresh or plan.prior is None:
                continue
            dt[b, 0] = (plan.time - plan.prior.last_time) / 3600.0
            for name, _ in self._state_specs:
                states[name][:, b, :] = plan.prior.tensors[name]
        return x, dt, states

    def _finite(self, risk: np.ndarray, next_states: dict[str, np.ndarray]) -> np.ndarray:
        """(B,) bool: the rows whose risk and next state are all finite (storable, renderable)."""
        ok: np.ndarray = np.isfinite(risk).all(axis=1)
        for name, _ in self._state_specs:
            ok &= np.isfinite(next_states[name]).all(axis=(0, 2))
        return ok

    def _commits(
        self,
        planned: Sequence[_Planned],
        rows: Sequence[int],
        risk: np.ndarray,
        next_states: dict[str, np.ndarray],
    ) -> list[Commit]:
        """The commits of ``planned[b]`` for each batch row ``b`` in ``rows``."""
        scored_at = self._clock()
        manifest = self.model.manifest
        commits = []
        by_entity = {  # name -> (B, L, H): each entity's next state one contiguous view
            name: np.ascontiguousarray(next_states[name].transpose(1, 0, 2))
            for name, _ in self._state_specs
        }
        for b in rows:
            plan = planned[b]
            prior_step = plan.prior.step if plan.prior is not None else 0
            event = plan.event
            score = Score(
                score_id=self._new_score_id(),
                entity_id=event.entity_id,
                event_id=event.event_id,
                step=prior_step + 1,
                event_time=event.time,
                scored_at=scored_at,
                model_name=manifest.name,
                model_version=manifest.version,
                risk={name: float(risk[b, k]) for k, name in enumerate(self._outputs)},
            )
            state = EntityState(
                step=prior_step + 1,
                last_time=plan.time,
                model_key=manifest.key,
                tensors={name: by_entity[name][b] for name, _ in self._state_specs},  # (L, H)
                latest=score,
                previous=plan.prior.latest if plan.prior is not None else None,
                alerts=next_alerts(
                    plan.prior.alerts if plan.prior is not None else {},
                    score.risk,
                    self.thresholds,
                    event.time,
                ),
            )
            commits.append(
                Commit(prior_step, state, LoggedScore(score, dict(event.values), event.key))
            )
        return commits

    async def _run_model(
        self, x: np.ndarray, dt: np.ndarray, states: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        started = time.perf_counter()
        if len(x) < _THREAD_BATCH:  # a thread hop costs more than a small step
            out = self.model.step(x, dt, states)
        else:
            loop = asyncio.get_running_loop()
            out = await loop.run_in_executor(self._executor, self.model.step, x, dt, states)
        self.stats.model_step(len(x), time.perf_counter() - started)
        return out

    # -- reads --------------------------------------------------------------------------------

    async def latest(self, entity_id: str) -> EntityState:
        state = await self._store.get(entity_id)
        if state is None or state.latest is None:
            raise UnknownEntity(f"no state for entity {entity_id!r}", field="entity_id")
        return state

    async def forget(self, entity_id: str) -> None:
        if not await self._store.forget(entity_id):
            raise UnknownEntity(f"no state for entity {entity_id!r}", field="entity_id")

    async def history(
        self, entity_id: str, *, since: datetime | None, after_step: int | None, limit: int
    ) -> list[Score]:
        return await self._log.history(entity_id, since=since, after_step=after_step, limit=limit)

    async def history_with_values(
        self, entity_id: str, *, since: datetime | None, after_step: int | None, limit: int
    ) -> list[LoggedScore]:
        return await self._log.history_with_values(
            entity_id, since=since, after_step=after_step, limit=limit
        )
