"""The application service: every operation the API offers, in domain words, over the core's ports.

The web layer parses a request, makes one call here and renders what comes back; it never reaches
for an adapter. What the routes may do is therefore listed in one place, typed with the Protocol
ports (``riskstream.core.ports``), so the service runs on fakes as well as on Redis and SQL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime

from riskstream.core.alerts import Threshold
from riskstream.core.batcher import Scorer
from riskstream.core.domain import Event, FeedPage, LoggedScore, Outcome, Score, Watched
from riskstream.core.engine import Result
from riskstream.core.errors import (
    InvalidInput,
    OutOfOrder,
    RiskstreamError,
    Unavailable,
    UnknownEntity,
)
from riskstream.core.explain import Explainer, Explanation
from riskstream.core.manifest import Manifest
from riskstream.core.ports import AuditLog, ScoreLog, StateStore, Views
from riskstream.core.readiness import Readiness
from riskstream.core.replay import Replayer, ReplayReport
from riskstream.core.stats import OUTCOMES, EventOutcome, EventStats, NoStats


class RiskService:
    def __init__(
        self,
        *,
        scorer: Scorer,
        store: StateStore,
        log: ScoreLog,
        views: Views,
        manifest: Manifest,
        thresholds: Mapping[str, Threshold],
        readiness: Callable[[], Awaitable[Readiness]],
        audit: AuditLog | None = None,
        replayer: Replayer | None = None,
        stats: EventStats | None = None,
        explainer: Explainer | None = None,
    ) -> None:
        self._explainer = explainer
        self._stats: EventStats = stats or NoStats()
        self._audit = audit
        self._replayer = replayer
        self._readiness = readiness
        self._scorer = scorer
        self._store = store
        self._log = log
        self._views = views
        self.manifest = manifest
        self.thresholds = dict(thresholds)

    # -- writes ---------------------------------------------------------------------------

    async def score_events(self, events: Sequence[Event]) -> list[Result]:
        """One result per event, in the order given: its score, or its own error."""
        try:
            results = await self._scorer.score(events)
        except Unavailable:
            self._stats.events("unavailable", len(events))
            raise
        counts = dict.fromkeys(OUTCOMES, 0)
        for result in results:
            counts[outcome_of(result)] += 1
        for outcome, count in counts.items():
            if count:
                self._stats.events(outcome, count)
        return results

    async def score_event(self, event: Event) -> Outcome:
        try:
            [result] = await self._scorer.score([event])
        except Unavailable:
            self._stats.events("unavailable", 1)
            raise
        self._stats.events(outcome_of(result), 1)
        if isinstance(result, RiskstreamError):
            raise result
        return result

    def refused(self, count: int) -> None:
        """``count`` events were refused before they could be scored: their request items did
        not validate (the web layer's parsing). Counted with the events the engine refuses."""
        if count:
            self._stats.events("invalid", count)

    async def forget(self, entity_id: str, *, key: str | None = None) -> None:
        """Forget the entity's state; first, the deletion is audited (key, entity, time): if
        the audit log cannot be written (``Unavailable``), nothing is forgotten. An attempt on
        an entity with no state is audited too (then 404)."""
        if self._audit is not None:
            await self._audit.record_deletion(key, entity_id)
        if not await self._store.forget(entity_id):
            raise UnknownEntity(f"no state for entity {entity_id!r}", field="entity_id")

    # -- one entity -----------------------------------------------------------------------

    async def latest_risk(self, entity_id: str) -> Watched:
        watched = await self._views.watched(entity_id)
        if watched is None:
            raise UnknownEntity(f"no state for entity {entity_id!r}", field="entity_id")
        return watched

    async def history(
        self, entity_id: str, *, since: datetime | None, after_step: int | None, limit: int
    ) -> list[Score]:
        return await self._log.history(
            entity_id, since=_aware(since), after_step=after_step, limit=limit
        )

    async def history_with_values(
        self, entity_id: str, *, since: datetime | None, after_step: int | None, limit: int
    ) -> list[LoggedScore]:
        return await self._log.history_with_values(
            entity_id, since=_aware(since), after_step=after_step, limit=limit
        )

    async def explain(self, entity_id: str, step: int) -> Explanation:
        """Why the logged score at ``step`` moved: per output, its risk, the previous one and
        the event's inputs ranked by their effect (``riskstream.core.explain``)."""
        if self._explainer is None:
            raise InvalidInput("this server has no event log to explain from", field="step")
        return await self._explainer.explain(entity_id, step)

    # -- operations -----------------------------------------------------------------------

    async def replay(
        self, entity_ids: Sequence[str] | None, *, model: str | None = None
    ) -> ReplayReport:
        """Rebuild entities' states from the event log with this server's model and write them
        with the live compare-and-set (``entity_ids`` None: every entity in the log)."""
        if self._replayer is None:
            raise InvalidInput("this server has no event log to replay from", field="body")
        if model is not None and model != self.manifest.key:
            raise InvalidInput(
                f"this server runs {self.manifest.key}, not {model}; replay another model "
                "version with `riskstream replay --model NAME/VERSION`",
                field="model",
            )
        if entity_ids is None:
            return await self._replayer.replay_all(self._store)
        return await self._replayer.replay(list(dict.fromkeys(entity_ids)), self._store)

    async def readiness(self) -> Readiness:
        """Whether this process can serve (Redis and the database reachable), and what an
        operator should act on even so (dead letters, a stalled drain, Redis found emptied)."""
        return await self._readiness()

    # -- dashboards -----------------------------------------------------------------------

    def output(self, name: str | None) -> str:
        """The model output a dashboard asks about; the first output if it names none."""
        outputs = self.manifest.output_names
        if name is None:
            return outputs[0]
        if name not in outputs:
            raise InvalidInput(
                f"unknown output {name!r}; the model has {list(outputs)}", field="output"
            )
        return name

    async def views_version(self) -> int:
        return await self._views.version()

    async def watchlist(self, output: str, *, min_risk: float, limit: int) -> list[Watched]:
        return await self._views.watchlist(output, min_risk=min_risk, limit=limit)

    async def feed(self, cursor: str | None, limit: int) -> FeedPage:
        return await self._views.feed(cursor, limit)

    async def last_cursor(self) -> str | None:
        return await self._views.last_cursor()


def outcome_of(result: Result) -> EventOutcome:
    if isinstance(result, Outcome):
        return "duplicate" if result.duplicate else "scored"
    if isinstance(result, OutOfOrder):
        return "late"
    if isinstance(result, Unavailable):  # Contention too: a 503, try again later
        return "unavailable"
    return "invalid"


def _aware(since: datetime | None) -> datetime | None:
    if since is not None and since.tzinfo is None:
        raise InvalidInput("since has no UTC offset; add 'Z' or e.g. '+01:00'", field="since")
    return since
