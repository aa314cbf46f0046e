"""The read side dashboards poll: a watchlist of current risk and a feed of every score in commit
order, both kept by the same atomic commit that advances the state (see redis_store.py).

A record these readers cannot decode, or could not render (a time outside what a timestamp can
say, a risk that is not a finite number), is skipped and counted (``unreadable(view)``; the
metric ``riskstream_unreadable_records_total``) instead of failing every dashboard's request: one
bad record must not blind a ward. Asked about that one entity, the reader says so (409).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis

from riskstream.adapters.codec import score_from_dict
from riskstream.adapters.redis_common import ViewKeys, redis_errors
from riskstream.core.domain import FeedEntry, FeedPage, Score, Watched
from riskstream.core.errors import CursorExpired, InvalidInput, UnreadableRecord

log = logging.getLogger(__name__)

_WATCH_FIELDS = ("step", "t", "latest", "prev", "alerts")
# What a broken record raises while it is decoded and checked
_BROKEN = (ValueError, TypeError, KeyError, AttributeError, OverflowError, OSError)

Unreadable = Callable[[str], None]  # called with the view ("watchlist", "feed", "latest")


def _ignore(view: str) -> None:
    pass


# KEYS: a watchlist, then state keys; ARGV: their entity ids. Drops from the watchlist the
# entities whose state is gone (expired: STATE_TTL), checked and removed atomically so that an
# entity committed meanwhile keeps its place. A rehydrated entity is put back by its install.
_PRUNE = """
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then redis.call('ZREM', KEYS[1], ARGV[i - 1]) end
end
return 0
"""


# A Redis stream id, as the feed gives them out (two unsigned 64-bit numbers; 19 digits fit)
CURSOR_PATTERN = r"^[0-9]{1,19}-[0-9]{1,19}$"
_CURSOR = re.compile(CURSOR_PATTERN)


def _valid_cursor(cursor: str) -> str:
    if not _CURSOR.fullmatch(cursor):
        raise InvalidInput(f"{cursor!r} is not a cursor this feed gave out", field="cursor")
    return cursor


class RedisViews:
    def __init__(
        self, client: aioredis.Redis, keys: ViewKeys, *, unreadable: Unreadable = _ignore
    ) -> None:
        self._r = client
        self.keys = keys
        self._unreadable = unreadable
        self._prune = client.register_script(_PRUNE)

    async def version(self) -> int:
        """Changes whenever any entity's score or state does: the basis of ETags."""
        async with redis_errors():
            raw = await self._r.get(self.keys.version)
        return int(raw or 0)

    async def watched(self, entity_id: str) -> Watched | None:
        async with redis_errors():
            row = await self._r.hmget(self.keys.state(entity_id), _WATCH_FIELDS)
        try:
            return _watched(entity_id, row)
        except _BROKEN as exc:
            self._skip("latest", entity_id, exc)
            raise UnreadableRecord(
                f"the stored state of entity {entity_id!r} cannot be read; DELETE the entity "
                "to start it afresh",
                field="entity_id",
            ) from None

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
        gone: list[str] = []
        for entity_id, row in zip(ids, rows):
            try:
                one = _watched(_text(entity_id), row)
            except _BROKEN as exc:
                self._skip("watchlist", entity_id, exc)
                continue
            if one is not None:
                watched.append(one)
            elif all(field is None for field in row):  # expired, or forgotten meanwhile
                gone.append(_text(entity_id))
        if gone:
            async with redis_errors():
                keys = [self.keys.watchlist(output), *map(self.keys.state, gone)]
                await self._prune(keys=keys, args=gone)
        return watched

    async def feed(self, cursor: str | None, limit: int) -> FeedPage:
        """Scores committed after ``cursor`` (from the oldest kept if None), oldest first."""
        start = f"({_valid_cursor(cursor)}" if cursor is not None else "-"
        async with redis_errors():
            pipe = self._r.pipeline(transaction=False)
            pipe.xrange(self.keys.feed, "-", "+", count=1)
            pipe.xrange(self.keys.feed, start, "+", count=limit)
            oldest, raw = await pipe.execute()
        if cursor is not None and oldest and _key(oldest[0][0].decode()) > _key(cursor):
            # Entries after the cursor may have been trimmed: the poller cannot be told of them.
            raise CursorExpired(
                f"the feed no longer holds scores after cursor {cursor}; "
                "read the watchlist and follow the feed from its last cursor",
                field="cursor",
            )
        entries = []
        for entry_id, fields in raw:
            try:
                entries.append(_entry(entry_id, fields))
            except _BROKEN as exc:
                self._skip("feed", entry_id, exc)
        return FeedPage(entries, _text(raw[-1][0]) if raw else None)

    async def last_cursor(self) -> str | None:
        async with redis_errors():
            last = await self._r.xrevrange(self.keys.feed, "+", "-", count=1)
        return _text(last[0][0]) if last else None

    def _skip(self, view: str, key: object, exc: BaseException) -> None:
        log.warning("skipped an unreadable %s record %s: %r", view, _text(key), exc)
        self._unreadable(view)


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _key(cursor: str) -> tuple[int, int]:
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq or 0)


def _watched(entity_id: str, row: list[Any]) -> Watched | None:
    step, t, latest, prev, alerts = row
    if step is None or latest is None or t is None:
        return None
    return Watched(
        entity_id=entity_id,
        step=_count(int(step)),
        last_time=_instant(float(t)),
        latest=_score(orjson.loads(latest)),
        previous=_score(orjson.loads(prev)) if prev else None,
        alerts=_alerts(orjson.loads(alerts)) if alerts else {},
    )


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> FeedEntry:
    payload = orjson.loads(fields[b"d"])
    return FeedEntry(_text(entry_id), _score(payload["score"]), _alerts(payload["alerts"]))


# -- what a response can carry: checked here, so that rendering cannot fail later -------------


def _score(raw: Any) -> Score:
    score = score_from_dict(raw)
    for text in (
        score.score_id,
        score.entity_id,
        score.event_id,
        score.model_name,
        score.model_version,
    ):
        if not isinstance(text, str):
            raise TypeError(f"{text!r} is not a string")
    _count(score.step)
    _instant(score.event_time)
    _instant(score.scored_at)
    if not isinstance(score.risk, dict):
        raise TypeError("risk is not a mapping")
    for name, p in score.risk.items():
        if not isinstance(name, str) or isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"risk {name!r}: {p!r} is not a number")
        if not math.isfinite(p):
            raise ValueError(f"risk {name!r} is {p!r}")
    return score


def _alerts(raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise TypeError("alerts is not a mapping")
    for name, since in raw.items():
        if not isinstance(name, str):
            raise TypeError(f"alert output {name!r} is not a string")
        _instant(since)
    return raw


def _count(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step {step!r} is not a count")
    return step


def _instant(t: Any) -> float:
    """A time that renders as an ISO 8601 timestamp (raises for inf, NaN and beyond year 9999)."""
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise TypeError(f"time {t!r} is not a number")
    datetime.fromtimestamp(t, UTC)
    return float(t)
