"""The read side dashboards poll: a watchlist of current risk and a feed of every score in commit
order, both kept by the same atomic commit that advances the state (see redis_store.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis

from app.adapters.codec import decode_score, score_from_dict
from app.adapters.redis_common import ViewKeys, redis_errors
from app.core.domain import Score
from app.core.errors import CursorExpired, InvalidInput

_WATCH_FIELDS = ("step", "t", "latest", "prev", "alerts")


@dataclass(frozen=True, slots=True)
class Watched:
    step: int
    last_time: float
    latest: Score
    previous: Score | None
    alerts: dict[str, float]


@dataclass(frozen=True, slots=True)
class FeedEntry:
    cursor: str
    score: Score
    alerts: dict[str, float]


def _valid_cursor(cursor: str) -> str:
    ms, _, seq = cursor.partition("-")
    if not (ms.isdigit() and seq.isdigit()):
        raise InvalidInput(f"{cursor!r} is not a cursor this feed gave out", field="cursor")
    return cursor


class RedisViews:
    def __init__(self, client: aioredis.Redis, keys: ViewKeys) -> None:
        self._r = client
        self.keys = keys

    async def version(self) -> int:
        """Changes whenever any entity's score or state does: the basis of ETags."""
        async with redis_errors():
            raw = await self._r.get(self.keys.version)
        return int(raw or 0)

    async def watchlist(self, output: str, *, min_risk: float, limit: int) -> list[Watched]:
        async with redis_errors():
            ids = await self._r.zrevrangebyscore(
                self.keys.watchlist(output), "+inf", min_risk, start=0, num=limit
            )
            pipe = self._r.pipeline(transaction=False)
            for entity_id in ids:
                pipe.hmget(self.keys.state(_text(entity_id)), _WATCH_FIELDS)
            rows = await pipe.execute() if ids else []
        watched = []
        for step, t, latest, prev, alerts in rows:
            if step is None or latest is None or t is None:
                continue  # forgotten between the two reads
            watched.append(
                Watched(
                    step=int(step),
                    last_time=float(t),
                    latest=decode_score(latest),
                    previous=decode_score(prev) if prev else None,
                    alerts=orjson.loads(alerts) if alerts else {},
                )
            )
        return watched

    async def feed(self, cursor: str | None, limit: int) -> list[FeedEntry]:
        """Scores committed after ``cursor`` (from the oldest kept if None), oldest first."""
        start = f"({_valid_cursor(cursor)}" if cursor else "-"
        async with redis_errors():
            pipe = self._r.pipeline(transaction=False)
            pipe.xrange(self.keys.feed, "-", "+", count=1)
            pipe.xrange(self.keys.feed, start, "+", count=limit)
            oldest, entries = await pipe.execute()
        if cursor and oldest and _key(oldest[0][0].decode()) > _key(cursor):
            # Entries after the cursor may have been trimmed: the poller cannot be told of them.
            raise CursorExpired(
                f"the feed no longer holds scores after cursor {cursor}; "
                "read the watchlist and follow the feed from its last cursor",
                field="cursor",
            )
        return [_entry(entry_id, fields) for entry_id, fields in entries]

    async def last_cursor(self) -> str | None:
        async with redis_errors():
            last = await self._r.xrevrange(self.keys.feed, "+", "-", count=1)
        return _text(last[0][0]) if last else None


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _key(cursor: str) -> tuple[int, int]:
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq or 0)


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> FeedEntry:
    payload = orjson.loads(fields[b"d"])
    return FeedEntry(entry_id.decode(), score_from_dict(payload["score"]), payload["alerts"])


__all__: Sequence[str] = ["FeedEntry", "RedisViews", "Watched"]
