"""The wire format: pydantic models of request and response bodies, and the one mapping from
domain objects to them (the ``of`` constructors).

Every route answers with one of these models, serialised by pydantic's Rust serializer
(``responses.ModelJSON``), so the OpenAPI description and the bytes sent come from one
definition. Responses are built by ``_build``, not validated: the values come from the domain,
already checked, and a second validation per request would cost the hot routes (the single event
and bulk, thousands of results a request) more than the whole rendering did before. Times are
``datetime`` objects, which the serializer writes as ISO 8601 with "Z" faster than Python can
format them. ``tests/unit/test_schemas.py`` validates what the builders make against the models.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

from riskstream.core.alerts import Threshold
from riskstream.core.domain import FeedEntry, FeedPage, Outcome, Score, Watched
from riskstream.core.errors import InvalidInput, RiskstreamError
from riskstream.core.explain import Explanation
from riskstream.core.readiness import Readiness


def _finite(value: float) -> bool:
    """Also False for an integer too large for a float (OverflowError would be a 500)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _epoch_seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("time must be an ISO 8601 timestamp or epoch seconds, not a boolean")
    if isinstance(value, (int, float)):
        if not _finite(value):
            raise ValueError("time must be a finite number of epoch seconds")
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO 8601 timestamp (e.g. 2026-11-25T08:00:00Z)"
            ) from None
        if parsed.tzinfo is None:
            raise ValueError(f"{value!r} has no UTC offset; add 'Z' or e.g. '+01:00'")
        try:
            return parsed.timestamp()
        except (OverflowError, ValueError, OSError):
            raise ValueError(f"{value!r} is not a time this service can take") from None
    raise ValueError("time must be an ISO 8601 timestamp with an offset, or epoch seconds")


_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def instant(value: str, field: str) -> datetime:
    """A query parameter's RFC 3339 date-time (what the OpenAPI ``format: date-time`` says)."""
    try:
        if not _RFC3339.fullmatch(value):
            raise ValueError(value)
        return datetime.fromisoformat(value.upper())
    except ValueError:
        raise InvalidInput(
            f"{field} {value!r} is not an RFC 3339 date-time with Z or an offset "
            "(e.g. 2026-11-25T08:00:00Z)",
            field=field,
        ) from None


def _feature_value(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number or null, not {type(value).__name__}")
    if not _finite(value):
        raise ValueError(f"{value!r} is not a finite number")
    return float(value)


_TIME_SCHEMA = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "number", "description": "seconds since the Unix epoch, UTC"},
    ]
}
EpochSeconds = Annotated[
    float, BeforeValidator(_epoch_seconds), WithJsonSchema(_TIME_SCHEMA, mode="validation")
]
FeatureValue = Annotated[float | None, BeforeValidator(_feature_value)]
# Times in responses: datetimes in UTC, sent as ISO 8601 with a "Z"
Instant = datetime
_from_ts = datetime.fromtimestamp

M = TypeVar("M", bound=BaseModel)


def _at(t: float) -> datetime:
    return _from_ts(t, UTC)


def _build(cls: type[M], fields: dict[str, Any]) -> M:
    """``model_construct`` without its per-field Python loop (13 µs -> 1 µs for an EventOut):
    the builders below give every field, so there is nothing to default."""
    model = cls.__new__(cls)
    object.__setattr__(model, "__dict__", fields)
    object.__setattr__(model, "__pydantic_fields_set__", set(fields))
    object.__setattr__(model, "__pydantic_extra__", None)
    object.__setattr__(model, "__pydantic_private__", None)
    return model


# -- requests ------------------------------------------------------------------------------


class EventIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "event_id": "e1",
                    "time": "2026-11-25T08:00:00Z",
                    "values": {"HR": 97, "Creatinine": 1.4},
                }
            ]
        },
    )

    event_id: str = Field(description="Unique per entity; re-sending it returns the first result")
    time: EpochSeconds = Field(description="ISO 8601 with offset or Z, or epoch seconds")
    values: dict[str, FeatureValue] = Field(
        default_factory=dict, description="Feature name (see GET /v1/model) -> value or null"
    )


class BulkEventIn(EventIn):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "entity_id": "p2",
                    "event_id": "a",
                    "time": "2026-11-25T08:00:00Z",
                    "values": {"HR": 80},
                }
            ]
        }
    )

    entity_id: str


# -- responses -----------------------------------------------------------------------------


class ModelRef(BaseModel):
    name: str
    version: str


@lru_cache(maxsize=16)
def _model_ref(name: str, version: str) -> ModelRef:
    """One per model version (never modified): a bulk answer's thousand results share it."""
    return _build(ModelRef, {"name": name, "version": version})


class ScoreOut(BaseModel):
    entity_id: str
    event_id: str
    step: int = Field(description="How many events the entity has had, this one included")
    time: Instant = Field(description="The event's time, UTC")
    scored_at: Instant
    model: ModelRef
    risk: dict[str, float] = Field(description="Output name -> probability")

    @staticmethod
    def fields_of(s: Score) -> dict[str, Any]:
        return {
            "entity_id": s.entity_id,
            "event_id": s.event_id,
            "step": s.step,
            "time": _from_ts(s.event_time, UTC),
            "scored_at": _from_ts(s.scored_at, UTC),
            "model": _model_ref(s.model_name, s.model_version),
            "risk": s.risk,
        }

    @classmethod
    def of(cls, s: Score) -> ScoreOut:
        return _build(cls, cls.fields_of(s))


class EventOut(ScoreOut):
    duplicate: bool = Field(description="True if this event_id was already scored")
    rehydrated: bool = Field(
        description="True if the entity's state was missing from Redis (emptied, or expired "
        "after STATE_TTL) or of another model version, and was rebuilt from the event log "
        "before this event"
    )

    @classmethod
    def of_outcome(cls, o: Outcome) -> EventOut:
        fields = cls.fields_of(o.score)
        fields["duplicate"] = o.duplicate
        fields["rehydrated"] = o.rehydrated
        return _build(cls, fields)


class HistoryScoreOut(ScoreOut):
    values: dict[str, float | None] | None = Field(
        description="The event's values as received; null unless include_values=true"
    )

    @classmethod
    def of_logged(cls, s: Score, values: dict[str, float | None] | None) -> HistoryScoreOut:
        fields = cls.fields_of(s)
        fields["values"] = values
        return _build(cls, fields)


class ScorePage(BaseModel):
    entity_id: str
    scores: list[HistoryScoreOut]
    next_after_step: int | None = Field(
        description="Pass as after_step for the next page; null when this page is the last"
    )


class LatestRiskOut(ScoreOut):
    last_event_time: Instant = Field(description="The time the entity's state is at")

    @classmethod
    def of_watched(cls, w: Watched) -> LatestRiskOut:
        return _build(cls, cls.latest_fields(w))

    @staticmethod
    def latest_fields(w: Watched) -> dict[str, Any]:
        fields = ScoreOut.fields_of(w.latest)
        fields["step"] = w.step
        fields["last_event_time"] = _at(w.last_time)
        return fields


class AlertOut(BaseModel):
    since: Instant = Field(description="When the alert was raised (the event's time)")


def _alerts(active: dict[str, float]) -> dict[str, AlertOut]:
    return {output: _build(AlertOut, {"since": _at(t)}) for output, t in active.items()}


class WatchedOut(LatestRiskOut):
    change: dict[str, float | None] = Field(
        description="Per output, the change from the score before; null for a first score"
    )
    alerts: dict[str, AlertOut | None] = Field(description="Per output, the alert or null")

    @classmethod
    def of_watched_in(cls, w: Watched, outputs: tuple[str, ...]) -> WatchedOut:
        previous = w.previous.risk if w.previous is not None else {}
        active = _alerts(w.alerts)
        fields = cls.latest_fields(w)
        fields["change"] = {
            o: (w.latest.risk[o] - previous[o]) if o in previous and o in w.latest.risk else None
            for o in outputs
        }
        fields["alerts"] = {o: active.get(o) for o in outputs}
        return _build(cls, fields)


class ThresholdOut(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    raise_at: float = Field(alias="raise", description="An alert is raised at this risk")
    clear: float = Field(description="… and cleared only below this one")


class WatchlistOut(BaseModel):
    output: str
    thresholds: dict[str, ThresholdOut]
    entities: list[WatchedOut]

    @classmethod
    def of(
        cls,
        output: str,
        thresholds: Mapping[str, Threshold],
        rows: list[Watched],
        outputs: tuple[str, ...],
    ) -> WatchlistOut:
        levels = {
            o: ThresholdOut.model_construct(raise_at=t.raise_at, clear=t.clear_below)
            for o, t in thresholds.items()
        }
        entities = [WatchedOut.of_watched_in(w, outputs) for w in rows]
        return _build(cls, {"output": output, "thresholds": levels, "entities": entities})


class FeedEntryOut(ScoreOut):
    cursor: str = Field(description="The feed position of this score")
    alerts: dict[str, AlertOut] = Field(description="The entity's alerts after this score")

    @classmethod
    def of_entry(cls, e: FeedEntry) -> FeedEntryOut:
        fields = cls.fields_of(e.score)
        fields["cursor"] = e.cursor
        fields["alerts"] = _alerts(e.alerts)
        return _build(cls, fields)


class FeedOut(BaseModel):
    scores: list[FeedEntryOut]
    next_cursor: str | None = Field(description="Pass as cursor to get only newer scores")

    @classmethod
    def of(cls, page: FeedPage, asked: str | None) -> FeedOut:
        """``next_cursor``: past the last entry read, skipped ones too; else the one asked."""
        scores = [FeedEntryOut.of_entry(e) for e in page.entries]
        return _build(cls, {"scores": scores, "next_cursor": page.cursor or asked})


class InputEffectOut(BaseModel):
    feature: str = Field(description="The feature's name (GET /v1/model describes it)")
    value: float = Field(description="Its value in the event, as logged")
    effect: float = Field(
        description="The risk with this input minus the risk with it withheld (as if not "
        "measured): positive, it raised the risk"
    )


class OutputExplanationOut(BaseModel):
    risk: float = Field(description="The risk logged for this event")
    previous: float | None = Field(
        description="The risk logged for the entity's previous event; null at its first"
    )
    inputs: list[InputEffectOut] = Field(
        description="The event's inputs, by the magnitude of their effect, largest first"
    )


class ExplanationOut(ScoreOut):
    reproduced: bool = Field(
        description="The risk recomputed by replaying the stay equals the logged one (within "
        "1e-5); false when the state before the event differs from the live one (earlier "
        "events scored by another model version, a replay horizon)"
    )
    outputs: dict[str, OutputExplanationOut] = Field(description="Per model output")

    @classmethod
    def of_explanation(cls, e: Explanation) -> ExplanationOut:
        fields = cls.fields_of(e.score)
        fields["reproduced"] = e.reproduced
        fields["outputs"] = {
            name: _build(
                OutputExplanationOut,
                {
                    "risk": out.risk,
                    "previous": out.previous,
                    "inputs": [
                        _build(
                            InputEffectOut,
                            {"feature": i.feature, "value": i.value, "effect": i.effect},
                        )
                        for i in out.inputs
                    ],
                },
            )
            for name, out in e.outputs.items()
        }
        return _build(cls, fields)


class ForgottenOut(BaseModel):
    entity_id: str
    forgotten: bool


class ReplayIn(BaseModel):
    """Which entities to rebuild from the event log: listed, or all."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"entity_ids": ["p000001", "p000002"]}, {"all": True}]},
    )

    entity_ids: list[str] | None = Field(
        None, max_length=100_000, description="The entities to replay"
    )
    all: bool = Field(False, description="Every entity with events in the log")
    model: str | None = Field(
        None, description="NAME/VERSION; must be the model this server runs (the default)"
    )


class SkippedOut(BaseModel):
    entity_id: str
    reason: str


class ReplayOut(BaseModel):
    entities: int = Field(description="Entities asked about")
    installed: int = Field(description="States rebuilt and written")
    events: int = Field(description="Events stepped through the model")
    conflicts: int = Field(description="Writes that lost to a live event and were replayed again")
    skipped: list[SkippedOut] = Field(description="Entities not written, and why")
    seconds: float
    events_per_s: float


class FieldError(BaseModel):
    field: str | None
    message: str


class ErrorBody(BaseModel):
    status: int
    code: str
    message: str
    field: str | None = Field(description="What was wrong: a body field, 'body', a parameter")
    errors: list[FieldError] | None = Field(
        default=None, description="Every problem found, when there are several"
    )

    @classmethod
    def of(cls, exc: RiskstreamError) -> ErrorBody:
        return cls.model_construct(
            status=exc.status, code=exc.code, message=exc.message, field=exc.field, errors=None
        )


class ErrorOut(BaseModel):
    error: ErrorBody


class BulkScoredOut(EventOut):
    index: int = Field(description="The event's position in the request")
    status: Literal[200]

    @classmethod
    def of_item(cls, index: int, o: Outcome) -> BulkScoredOut:
        fields = cls.fields_of(o.score)
        fields["duplicate"] = o.duplicate
        fields["rehydrated"] = o.rehydrated
        fields["index"] = index
        fields["status"] = 200
        return _build(cls, fields)


class BulkErrorOut(BaseModel):
    index: int = Field(description="The event's position in the request")
    status: int = Field(description="What the event would have got on its own")
    error: ErrorBody

    @classmethod
    def of_item(cls, index: int, exc: RiskstreamError) -> BulkErrorOut:
        return _build(cls, {"index": index, "status": exc.status, "error": ErrorBody.of(exc)})


class BulkOut(BaseModel):
    accepted: int
    rejected: int
    results: list[BulkScoredOut | BulkErrorOut]

    @classmethod
    def of_results(cls, results: list[BulkScoredOut | BulkErrorOut]) -> BulkOut:
        accepted = sum(1 for r in results if r.status == 200)
        return _build(
            cls, {"accepted": accepted, "rejected": len(results) - accepted, "results": results}
        )


class HealthOut(BaseModel):
    status: Literal["alive"]


class ReadyOut(BaseModel):
    status: Literal["ready", "degraded"] = Field(
        description="degraded: this process serves, but an operator should act on the warnings"
    )
    checks: dict[str, str] = Field(description="model -> its name/version; redis, database -> ok")
    warnings: list[FieldError] = Field(
        default_factory=list,
        description="dead letters waiting (deadletter), a stalled drain (outbox), Redis found "
        "emptied (redis); empty when ready",
    )

    @classmethod
    def of(cls, readiness: Readiness) -> ReadyOut:
        warnings = [FieldError(**w) for w in readiness.warnings]
        return cls(
            status="degraded" if warnings else "ready",
            checks=readiness.checks,
            warnings=warnings,
        )
