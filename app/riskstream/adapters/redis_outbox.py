"""The outbox in Redis, its dead letters and the instance marker.

Keys (``P`` is the configured prefix):
- ``P:outbox`` stream of scores committed but not yet in the SQL log (written by the commit
  script of ``redis_store.py``), read by consumer group ``sql``.
- ``P:deadletter`` stream of outbox entries the score log refused or nobody could decode:
  ``d`` the entry as it was stored, ``id`` its outbox id, ``error``, ``e`` and ``ev`` its entity
  and event (empty if unknown), ``at`` when it was set aside (epoch seconds).
- ``P:instance`` a random value set once (SET NX): each process remembers it, so one that finds
  it gone or changed knows Redis was emptied under it.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from riskstream.adapters.codec import decode_logged
from riskstream.adapters.redis_common import redis_errors
from riskstream.core.domain import LoggedScore
from riskstream.core.ports import DeadLetter, Undecodable

_GROUP = "sql"

# KEYS: outbox, dead letters. ARGV: group, time, then per letter: entry id, error, entity, event.
# Each entry is copied as it was stored, then acknowledged and deleted, in one atomic step.
_DEAD_LETTER = """
local moved = 0
for i = 3, #ARGV, 4 do
  local id = ARGV[i]
  local found = redis.call('XRANGE', KEYS[1], id, id)
  if #found > 0 then
    local fields = found[1][2]
    local payload = nil
    for j = 1, #fields, 2 do
      if fields[j] == 'd' then payload = fields[j + 1] end
    end
    if payload == nil then payload = cjson.encode(fields) end
    redis.call('XADD', KEYS[2], '*', 'd', payload, 'id', id, 'error', ARGV[i + 1],
               'e', ARGV[i + 2], 'ev', ARGV[i + 3], 'at', ARGV[2])
    moved = moved + 1
  end
  redis.pcall('XACK', KEYS[1], ARGV[1], id)
  redis.call('XDEL', KEYS[1], id)
end
return moved
"""

# KEYS: dead letters, outbox. ARGV: dead letter ids. Each goes back to the outbox as it was.
_REPLAY = """
local moved = 0
for i = 1, #ARGV do
  local found = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  if #found > 0 then
    local fields = found[1][2]
    for j = 1, #fields, 2 do
      if fields[j] == 'd' then redis.call('XADD', KEYS[2], '*', 'd', fields[j + 1]) end
    end
    redis.call('XDEL', KEYS[1], ARGV[i])
    moved = moved + 1
  end
end
return moved
"""

# What XRANGE gives back: (entry id, fields), all bytes.
_Page = list[tuple[bytes, dict[bytes, bytes]]]

STREAM_ID = re.compile(r"^\d+-\d+$")
_PAGE = 1_000


def _iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def _text(value: bytes | None) -> str | None:
    return value.decode(errors="replace") if value else None


class RedisOutbox:
    """The outbox stream, read by a consumer group: a dead drainer's claims are taken over."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, claim_idle_ms: int) -> None:
        self._r = client
        self.key = f"{prefix}:outbox"
        self.dead_letter_key = f"{prefix}:deadletter"
        self.marker_key = f"{prefix}:instance"
        self._idle = claim_idle_ms
        self._consumer = f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self._ready = False
        self._marker: bytes | None = None
        self._dead_letter = client.register_script(_DEAD_LETTER)
        self._replay = client.register_script(_REPLAY)

    async def _ensure_group(self) -> None:
        if self._ready:
            return
        try:
            await self._r.xgroup_create(self.key, _GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._ready = True

    async def claim(
        self, limit: int, *, block_ms: int = 0
    ) -> list[tuple[str, LoggedScore | Undecodable]]:
        """Entries idle too long in a (dead) consumer's hands first, then new ones.

        The group is made again if it is gone (Redis lost its data: ``NOGROUP``)."""
        async with redis_errors():
            try:
                entries = await self._claim(limit, block_ms)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._ready = False
                entries = await self._claim(limit, block_ms)
        return [(entry_id.decode(), _decode(fields)) for entry_id, fields in entries]

    async def _claim(self, limit: int, block_ms: int) -> list[Any]:
        await self._ensure_group()
        _, entries, *_ = await self._r.xautoclaim(
            self.key, _GROUP, self._consumer, self._idle, start_id="0-0", count=limit
        )
        entries = [e for e in entries if e and e[1]]  # ids deleted meanwhile come back empty
        if not entries:
            reply = await self._r.xreadgroup(
                _GROUP, self._consumer, {self.key: ">"}, count=limit, block=block_ms or None
            )
            entries = reply[0][1] if reply else []  # type: ignore[index]
        return list(entries)

    async def ack(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        async with redis_errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.xack(self.key, _GROUP, *ids)
            pipe.xdel(self.key, *ids)
            try:
                await pipe.execute()
            except ResponseError as exc:  # the group is gone: so are the entries it had
                if "NOGROUP" not in str(exc):
                    raise
                self._ready = False

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        args: list[str] = [_GROUP, repr(time.time())]
        for letter in letters:
            args += [letter.entry_id, letter.error, letter.entity_id or "", letter.event_id or ""]
        async with redis_errors():
            await self._dead_letter(keys=[self.key, self.dead_letter_key], args=args)

    async def backlog(self) -> int:
        async with redis_errors():
            return int(await self._r.xlen(self.key))

    async def dead_letters_waiting(self) -> int:
        async with redis_errors():
            return int(await self._r.xlen(self.dead_letter_key))

    async def intact(self) -> bool:
        """The first call sets the marker (unless another process did) and remembers it; later
        calls compare. Gone or changed: Redis was emptied; the marker is set again."""
        async with redis_errors():
            if self._marker is not None and await self._r.get(self.marker_key) == self._marker:
                return True
            pipe = self._r.pipeline(transaction=True)
            pipe.set(self.marker_key, secrets.token_hex(16), nx=True)
            pipe.get(self.marker_key)
            _, marker = await pipe.execute()
        first, self._marker = self._marker is None, marker
        if not first:
            self._ready = False  # the consumer group went with the data
        return first

    async def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter, oldest first: id, entity_id, event_id, error, time, outbox_id."""
        found: list[dict[str, Any]] = []
        start = "-"
        async with redis_errors():
            while True:
                page: _Page = await self._r.xrange(  # type: ignore[assignment]
                    self.dead_letter_key, start, "+", count=_PAGE
                )
                for letter_id, fields in page:
                    found.append(_letter(letter_id.decode(), fields))
                if len(page) < _PAGE:
                    return found
                start = "(" + page[-1][0].decode()

    async def replay(self, ids: Sequence[str] | None = None) -> int:
        """Move dead letters (all when ``ids`` is None) back to the outbox, to be drained again.
        Returns how many were moved."""
        async with redis_errors():
            if ids is not None:
                return await self._move_back(ids)
            # only those there now: one that fails again comes back with a newer id
            last: _Page = await self._r.xrevrange(  # type: ignore[assignment]
                self.dead_letter_key, "+", "-", count=1
            )
            if not last:
                return 0
            end, start, moved = last[0][0].decode(), "-", 0
            while True:
                page: _Page = await self._r.xrange(  # type: ignore[assignment]
                    self.dead_letter_key, start, end, count=_PAGE
                )
                moved += await self._move_back([letter_id.decode() for letter_id, _ in page])
                if len(page) < _PAGE:
                    return moved
                start = "(" + page[-1][0].decode()

    async def _move_back(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        return int(await self._replay(keys=[self.dead_letter_key, self.key], args=list(ids)))


def _decode(fields: dict[bytes, bytes]) -> LoggedScore | Undecodable:
    try:
        return decode_logged(fields[b"d"])
    except Exception as exc:  # any malformed entry: it must not stop the others
        return Undecodable(f"{type(exc).__name__}: {exc}"[:500])


def _letter(letter_id: str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    at = fields.get(b"at")
    return {
        "id": letter_id,
        "entity_id": _text(fields.get(b"e")),
        "event_id": _text(fields.get(b"ev")),
        "error": _text(fields.get(b"error")),
        "time": _iso(float(at)) if at else None,
        "outbox_id": _text(fields.get(b"id")),
    }
