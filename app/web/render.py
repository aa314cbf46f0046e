"""Domain objects to response dicts, built directly (they are hot) and documented by schemas.py."""

from __future__ import annotations

from typing import Any

from app.adapters.redis_views import FeedEntry, Watched
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


def alerts(active: dict[str, float]) -> dict[str, Any]:
    return {output: {"since": iso(since)} for output, since in active.items()}


def watched(w: Watched, outputs: tuple[str, ...]) -> dict[str, Any]:
    body = score(w.latest)
    body["step"] = w.step
    body["last_event_time"] = iso(w.last_time)
    previous = w.previous.risk if w.previous is not None else {}
    body["change"] = {
        o: (w.latest.risk[o] - previous[o]) if o in previous else None for o in outputs
    }
    active = alerts(w.alerts)
    body["alerts"] = {o: active.get(o) for o in outputs}
    return body


def feed_entry(entry: FeedEntry) -> dict[str, Any]:
    body = score(entry.score)
    body["cursor"] = entry.cursor
    body["alerts"] = alerts(entry.alerts)
    return body
