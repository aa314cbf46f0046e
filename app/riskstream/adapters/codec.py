"""Compact JSON for scores kept in Redis (latest score, dedup history, outbox)."""

from __future__ import annotations

from typing import Any

import orjson

from riskstream.core.domain import LoggedScore, Score


def score_to_dict(score: Score) -> dict[str, Any]:
    return {
        "id": score.score_id,
        "e": score.entity_id,
        "ev": score.event_id,
        "s": score.step,
        "t": score.event_time,
        "at": score.scored_at,
        "mn": score.model_name,
        "mv": score.model_version,
        "r": score.risk,
    }


def score_from_dict(d: dict[str, Any]) -> Score:
    return Score(
        score_id=d["id"],
        entity_id=d["e"],
        event_id=d["ev"],
        step=d["s"],
        event_time=d["t"],
        scored_at=d["at"],
        model_name=d["mn"],
        model_version=d["mv"],
        risk=d["r"],
    )


def encode_score(score: Score) -> bytes:
    return orjson.dumps(score_to_dict(score))


def decode_score(raw: bytes) -> Score:
    return score_from_dict(orjson.loads(raw))


def encode_logged(logged: LoggedScore) -> bytes:
    record: dict[str, Any] = {"score": score_to_dict(logged.score), "values": logged.values}
    if logged.key_name is not None:
        record["k"] = logged.key_name
    return orjson.dumps(record)


def decode_logged(raw: bytes) -> LoggedScore:
    """Records written before keys existed have no ``k``: their key name is None."""
    d = orjson.loads(raw)
    return LoggedScore(score_from_dict(d["score"]), d["values"], d.get("k"))
