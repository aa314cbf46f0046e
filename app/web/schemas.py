"""The wire format: pydantic models of request and response bodies, and the one mapping from
domain objects to them (the ``of`` constructors).

Every route answers with one of these models, serialised by pydantic's Rust serializer
(``responses.ModelJSON``), so the OpenAPI description and the bytes sent come from one
definition. Responses are built with ``model_construct``: the values come from the domain, already
checked, and validating them again would cost the hot routes a second pass per request.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

from app.core.domain import FeedEntry, Outcome, Score, Watched
from app.core.errors import RiskstreamError


def _epoch_seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("time must be an ISO 8601 timestamp or epoch seconds, not a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
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


def _feature_value(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number or null, not {type(value).__name__}")
    if not math.isfinite(value):
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
# Times in responses: ISO 8601 in UTC with a "Z"
Instant = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


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
            "time": iso(s.event_time),
            "scored_at": iso(s.scored_at),
            "model": ModelRef.model_construct(name=s.model_name, version=s.model_version),
            "risk": s.risk,
        }

    @classmethod
    def of(cls, s: Score) -> ScoreOut:
        return cls.model_construct(**cls.fields_of(s))


class EventOut(ScoreOut):
    duplicate: bool = Field(description="True if this event_id was already scored")

    @classmethod
    def of_outcome(cls, o: Outcome) -> EventOut:
        return cls.model_construct(**cls.fields_of(o.score), duplicate=o.duplicate)


class HistoryScoreOut(ScoreOut):
    values: dict[str, float | None] | None = Field(
        description="The event's values as received; null unless include_values=true"
    )

    @classmethod
    def of_logged(cls, s: Score, values: dict[str, float | None] | None) -> HistoryScoreOut:
        return cls.model_construct(**cls.fields_of(s), values=values)


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
        return cls.model_construct(**cls.latest_fields(w))

    @staticmethod
    def latest_fields(w: Watched) -> dict[str, Any]:
        fields = ScoreOut.fields_of(w.latest)
        fields["step"] = w.step
        fields["last_event_time"] = iso(w.last_time)
        return fields


class AlertOut(BaseModel):
    since: Instant = Field(description="When the alert was raised (the event's time)")


def _alerts(active: dict[str, float]) -> dict[str, AlertOut]:
    return {output: AlertOut.model_construct(since=iso(t)) for output, t in active.items()}


class WatchedOut(LatestRiskOut):
    change: dict[str, float | None] = Field(
        description="Per output, the change from the score before; null for a first score"
    )
    alerts: dict[str, AlertOut | None] = Field(description="Per output, the alert or null")

    @classmethod
    def of_watched_in(cls, w: Watched, outputs: tuple[str, ...]) -> WatchedOut:
        previous = w.previous.risk if w.previous is not None else {}
        active = _alerts(w.alerts)
        return cls.model_construct(
            **cls.latest_fields(w),
            change={
                o: (w.latest.risk[o] - previous[o])
                if o in previous and o in w.latest.risk
                else None
                for o in outputs
            },
            alerts={o: active.get(o) for o in outputs},
        )


class ThresholdOut(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    raise_at: float = Field(alias="raise", description="An alert is raised at this risk")
    clear: float = Field(description="… and cleared only below this one")


class WatchlistOut(BaseModel):
    output: str
    thresholds: dict[str, ThresholdOut]
    entities: list[WatchedOut]


class FeedEntryOut(ScoreOut):
    cursor: str = Field(description="The feed position of this score")
    alerts: dict[str, AlertOut] = Field(description="The entity's alerts after this score")

    @classmethod
    def of_entry(cls, e: FeedEntry) -> FeedEntryOut:
        return cls.model_construct(
            **cls.fields_of(e.score), cursor=e.cursor, alerts=_alerts(e.alerts)
        )


class FeedOut(BaseModel):
    scores: list[FeedEntryOut]
    next_cursor: str | None = Field(description="Pass as cursor to get only newer scores")


class ForgottenOut(BaseModel):
    entity_id: str
    forgotten: bool


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
            status=exc.status, code=exc.code, message=exc.message, field=exc.field
        )


class ErrorOut(BaseModel):
    error: ErrorBody


class BulkScoredOut(EventOut):
    index: int = Field(description="The event's position in the request")
    status: Literal[200]

    @classmethod
    def of_item(cls, index: int, o: Outcome) -> BulkScoredOut:
        return cls.model_construct(
            index=index, status=200, **cls.fields_of(o.score), duplicate=o.duplicate
        )


class BulkErrorOut(BaseModel):
    index: int = Field(description="The event's position in the request")
    status: int = Field(description="What the event would have got on its own")
    error: ErrorBody

    @classmethod
    def of_item(cls, index: int, exc: RiskstreamError) -> BulkErrorOut:
        return cls.model_construct(index=index, status=exc.status, error=ErrorBody.of(exc))


class BulkOut(BaseModel):
    accepted: int
    rejected: int
    results: list[BulkScoredOut | BulkErrorOut]


class HealthOut(BaseModel):
    status: str
