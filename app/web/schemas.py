"""The wire format: pydantic models of request and response bodies."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from app.core.domain import Score


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
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"{value!r} is out of the range of timestamps") from None
    raise ValueError("time must be an ISO 8601 timestamp with an offset, or epoch seconds")


def _feature_value(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number or null, not {type(value).__name__}")
    if not _finite(value):
        raise ValueError(f"{value!r} is not a finite number")
    return float(value)


EpochSeconds = Annotated[float, BeforeValidator(_epoch_seconds)]
FeatureValue = Annotated[float | None, BeforeValidator(_feature_value)]


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(description="Unique per entity; re-sending it returns the first result")
    time: EpochSeconds = Field(description="ISO 8601 with offset or Z, or epoch seconds")
    values: dict[str, FeatureValue] = Field(
        default_factory=dict, description="Feature name (see GET /v1/model) -> value or null"
    )


class BulkEventIn(EventIn):
    entity_id: str


class ModelRef(BaseModel):
    name: str
    version: str


class ScoreOut(BaseModel):
    entity_id: str
    event_id: str
    step: int = Field(description="How many events the entity has had, this one included")
    time: str = Field(description="The event's time, UTC")
    scored_at: str
    model: ModelRef
    risk: dict[str, float] = Field(description="Output name -> probability")

    @classmethod
    def of(cls, score: Score) -> ScoreOut:
        return cls(
            entity_id=score.entity_id,
            event_id=score.event_id,
            step=score.step,
            time=iso(score.event_time),
            scored_at=iso(score.scored_at),
            model=ModelRef(name=score.model_name, version=score.model_version),
            risk=dict(score.risk),
        )


class EventOut(ScoreOut):
    duplicate: bool = Field(description="True if this event_id was already scored")


class ScorePage(BaseModel):
    entity_id: str
    scores: list[ScoreOut]
    next_after_step: int | None = Field(
        description="Pass as after_step for the next page; null when this page is the last"
    )


class ErrorBody(BaseModel):
    status: int
    code: str
    message: str
    field: str | None = None
    errors: list[dict[str, Any]] | None = None


class ErrorOut(BaseModel):
    error: ErrorBody
