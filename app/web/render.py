"""Domain objects to response dicts, built directly (they are hot) and documented by schemas.py."""

from __future__ import annotations

from typing import Any

from app.core.domain import EntityState, Outcome, Score
from app.web.schemas import iso


def score(s: Score) -> dict[str, Any]:
    return {
        "entity_id": s.entity_id,
        "event_id": s.event_id,
        "step": s.step,
        "time": iso(s.event_time),
        "scored_at": iso(s.scored_at),
        "model": {"name": s.model_name, "version": s.model_version},
        "risk": dict(s.risk),
    }


def outcome(o: Outcome) -> dict[str, Any]:
    body = score(o.score)
    body["duplicate"] = o.duplicate
    return body


def latest(state: EntityState) -> dict[str, Any]:
    assert state.latest is not None
    body = score(state.latest)
    body["step"] = state.step
    body["last_event_time"] = iso(state.last_time)
    return body
