"""Entity state in Redis, advanced by an atomic compare-and-set that also fills the outbox.

Keys (``P`` is the configured prefix):
- ``P:s:<entity>`` hash (``_FIELDS``): ``step``, ``t`` (last event time), ``mv`` (model
  name/version), ``latest`` and ``prev`` (JSON scores), ``alerts``, and ``x``: every state
  tensor ``(L, H)`` in one blob, sparse when that is shorter (``state_blob.py``).
- ``P:d:<entity>`` hash event_id -> JSON score, and ``P:o:<entity>`` list of those event ids,
  newest first, trimmed to the dedup history length.
- ``P:outbox`` stream of scores committed but not yet in the SQL log, read by group ``sql``
  (``redis_outbox.py``, with the dead letters and the instance marker).
- the read side kept in the same atomic update (``redis_views.py``): ``P:feed`` stream of every
  score in commit order, ``P:w:<output>`` sorted sets of current risk, ``P:version`` counter.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence

import orjson
import redis.asyncio as aioredis

from riskstream.adapters.codec import (
    decode_score,
    encode_logged,
    encode_score,
    score_to_dict,
)
from riskstream.adapters.redis_common import ViewKeys, redis_errors
from riskstream.adapters.redis_outbox import RedisOutbox
from riskstream.adapters.state_blob import StateBlob
from riskstream.core.domain import Commit, EntityState, Install, Snapshot
from riskstream.core.manifest import StateSpec
from riskstream.core.ports import Observe, ignore

# One call per batch. KEYS: per event its state and seen-events hash.
# ARGV: per event its event id. Returns per event the state fields and the earlier score, if any.
_LOAD = """
local out = {}
for i = 1, #ARGV do
  local row = redis.call('HMGET', KEYS[2 * i - 1], %s)
  row[#row + 1] = redis.call('HGET', KEYS[2 * i], ARGV[i])
  out[i] = row
end
return out
"""

# One call per batch, each event its own compare-and-set.
# KEYS: outbox, feed, version, one watchlist per output, then per event: state, seen, order.
# ARGV: dedup history, feed length, number of outputs, state TTL in ms (0: none; the state,
#       seen and order keys expire after that long without an event), then two per event: a
#       packed record (see ``_pack``): expected step, event id, score JSON, outbox entry, feed
#       entry, entity id, one risk per output, then the values of the state hash's fields but
#       the last (``_FIELDS``; an empty ``prev`` leaves it as it was); and the state blob ``x``,
#       on its own because Lua pays per byte for every copy of it. Few arguments per event
#       keep the client's work small.
# Returns per event 1 (committed) or 0 (the step moved: retry).
_COMMIT = """
local keep, feed_len, n_out = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local n_fields = 6 + n_out + %d - 1
local names = {%s}
local done = {}
local k = 3 + n_out + 1
for a = 5, #ARGV, 2 do
  local record = ARGV[a]
  local f, pos = {}, 1 + 4 * n_fields
  for i = 1, n_fields do
    local len = struct.unpack('<I4', record, 4 * i - 3)
    f[i] = string.sub(record, pos, pos + len - 1)
    pos = pos + len
  end
  f[n_fields + 1] = ARGV[a + 1]  -- the state blob, the last of the hash's fields
  local state, seen, order = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local cur = redis.call('HGET', state, 'step')
  if (tonumber(cur) or 0) ~= tonumber(f[1]) then
    done[#done + 1] = 0
  else
    local id = f[2]
    redis.call('HSET', seen, id, f[3])
    local n = redis.call('LPUSH', order, id)
    if n > keep then
      local old = redis.call('RPOP', order, n - keep)
      redis.call('HDEL', seen, unpack(old))
    end
    redis.call('XADD', KEYS[1], '*', 'd', f[4])
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', feed_len, '*', 'd', f[5])
    redis.call('INCR', KEYS[3])
    for j = 1, n_out do
      redis.call('ZADD', KEYS[3 + j], f[6 + j], f[6])
    end
    local set = {}
    for j, name in ipairs(names) do
      local v = f[6 + n_out + j]
      if v ~= '' then
        set[#set + 1] = name
        set[#set + 1] = v
      end
    end
    redis.call('HSET', state, unpack(set))
    if ttl > 0 then
      redis.call('PEXPIRE', state, ttl)
      redis.call('PEXPIRE', seen, ttl)
      redis.call('PEXPIRE', order, ttl)
    end
    done[#done + 1] = 1
  end
  k = k + 3
end
return done
"""

# One call per batch of states rebuilt from the event log, each its own compare-and-set on the
# step, like ``_COMMIT`` but logging nothing (the scores are in the log already): the state hash
# replaced, the dedup history replaced by the entity's recent scores, its place on the watchlists.
# KEYS: version, one watchlist per output, then per entity: state, seen, order.
# ARGV: state TTL in ms (0: none), number of outputs, then four per entity: a packed record
#       (expected step, entity id, one risk per output of its latest score, then the state
#       hash's fields but the last, ``_FIELDS``; an empty one is left unset), the state blob
#       ``x``, the number of recent scores, and those packed as event id, score JSON, ... oldest
#       first. Returns per entity 1 (installed) or 0 (the step moved).
_INSTALL = """
local ttl, n_out = tonumber(ARGV[1]), tonumber(ARGV[2])
local names = {%s}
local n_fields = 2 + n_out + #names

local function fields(record, n)
  local f, pos = {}, 1 + 4 * n
  for i = 1, n do
    local len = struct.unpack('<I4', record, 4 * i - 3)
    f[i] = string.sub(record, pos, pos + len - 1)
    pos = pos + len
  end
  return f
end

local done = {}
local k = 1 + n_out + 1
for a = 3, #ARGV, 4 do
  local f = fields(ARGV[a], n_fields)
  local state, seen, order = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local cur = redis.call('HGET', state, 'step')
  if (tonumber(cur) or 0) ~= tonumber(f[1]) then
    done[#done + 1] = 0
  else
    redis.call('DEL', state, seen, order)
    local n_recent = tonumber(ARGV[a + 2])
    if n_recent > 0 then
      local r = fields(ARGV[a + 3], 2 * n_recent)
      for i = 1, n_recent do
        redis.call('HSET', seen, r[2 * i - 1], r[2 * i])
        redis.call('LPUSH', order, r[2 * i - 1])
      end
    end
    redis.call('INCR', KEYS[1])
    for j = 1, n_out do
      redis.call('ZADD', KEYS[1 + j], f[2 + j], f[2])
    end
    local set = {'x', ARGV[a + 1]}
    for j, name in ipairs(names) do
      local v = f[2 + n_out + j]
      if v ~= '' then
        set[#set + 1] = name
        set[#set + 1] = v
      end
    end
    redis.call('HSET', state, unpack(set))
    if ttl > 0 then
      redis.call('PEXPIRE', state, ttl)
      redis.call('PEXPIRE', seen, ttl)
      redis.call('PEXPIRE', order, ttl)
    end
    done[#done + 1] = 1
  end
  k = k + 3
end
return done
"""


def _pack(fields: Sequence[bytes]) -> bytes:
    """Fields as one string: their lengths (uint32 little-endian), then the fields."""
    return struct.pack(f"<{len(fields)}I", *map(len, fields)) + b"".join(fields)


# The state hash: small fields the views read too, and every state tensor in one blob ``x``.
_FIELDS = ("step", "t", "mv", "latest", "prev", "alerts", "x")

__all__ = ["RedisOutbox", "RedisStateStore"]  # the outbox moved to its own module


def _lua_list(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


class RedisStateStore:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        states: Sequence[StateSpec],
        dedup_history: int,
        outputs: Sequence[str],
        feed_length: int = 100_000,
        state_ttl_s: float | None = None,
        observe: Observe = ignore,
        state_sizes: Callable[[Sequence[int]], None] | None = None,
    ) -> None:
        self._r = client
        self._ttl_ms = round(state_ttl_s * 1000) if state_ttl_s else 0
        self._state_sizes = state_sizes
        self._outputs = tuple(outputs)
        self._feed_length = feed_length
        self.keys = ViewKeys(prefix)
        self._observe = observe
        self._prefix = prefix
        self._blob = StateBlob(states)
        self._history = dedup_history
        self._load = client.register_script(_LOAD % _lua_list(_FIELDS))
        self._commit = client.register_script(_COMMIT % (len(_FIELDS), _lua_list(_FIELDS)))
        self._install = client.register_script(_INSTALL % _lua_list(_FIELDS[:-1]))
        self.outbox_key = f"{prefix}:outbox"
        # the batch-wide keys of the commit script, then 3 per event
        self._commit_keys = [
            self.outbox_key,
            self.keys.feed,
            self.keys.version,
            *(self.keys.watchlist(o) for o in self._outputs),
        ]

    def _keys(self, entity_id: str) -> tuple[str, str, str]:
        p = self._prefix
        return f"{p}:s:{entity_id}", f"{p}:d:{entity_id}", f"{p}:o:{entity_id}"

    def _decode(self, row: Sequence[bytes | None]) -> EntityState | None:
        step, t, mv, latest, prev, alerts, blob = row
        if step is None or t is None or mv is None:
            return None
        return EntityState(
            step=int(step),
            last_time=float(t),
            model_key=mv.decode(),
            tensors=self._blob.decode(blob),
            latest=decode_score(latest) if latest else None,
            previous=decode_score(prev) if prev else None,
            alerts=orjson.loads(alerts) if alerts else {},
        )

    async def load(self, keys: Sequence[tuple[str, str]]) -> list[Snapshot]:
        redis_keys: list[str] = []
        for entity_id, _ in keys:
            redis_keys += self._keys(entity_id)[:2]
        async with redis_errors():
            started = time.perf_counter()
            rows = await self._load(keys=redis_keys, args=[event_id for _, event_id in keys])
            self._observe("load", time.perf_counter() - started)
        return [
            Snapshot(self._decode(row[:-1]), decode_score(row[-1]) if row[-1] else None)
            for row in rows
        ]

    async def commit(self, commits: Sequence[Commit]) -> list[bool]:
        keys = list(self._commit_keys)
        args: list[bytes | str | int] = [
            self._history,
            self._feed_length,
            len(self._outputs),
            self._ttl_ms,
        ]
        sizes: list[int] = []  # of each state hash as written
        for c in commits:
            state = c.state
            score = c.logged.score
            keys += self._keys(score.entity_id)
            latest = encode_score(score)
            feed_entry = orjson.dumps({"score": score_to_dict(score), "alerts": state.alerts})
            fields = [  # the state hash, in the order of _FIELDS, but the blob
                b"%d" % state.step,
                repr(state.last_time).encode(),
                state.model_key.encode(),
                latest,
                encode_score(state.previous) if state.previous is not None else b"",
                orjson.dumps(state.alerts),
            ]
            blob = self._blob.encode(state.tensors)
            args.append(
                _pack(
                    [
                        b"%d" % c.expected_step,
                        score.event_id.encode(),
                        latest,
                        encode_logged(c.logged),
                        feed_entry,
                        score.entity_id.encode(),
                        *[repr(float(score.risk[o])).encode() for o in self._outputs],
                        *fields,
                    ]
                )
            )
            args.append(blob)
            sizes.append(len(blob) + sum(map(len, fields)))
        async with redis_errors():
            started = time.perf_counter()
            replies = await self._commit(keys=keys, args=args)
            self._observe("commit", time.perf_counter() - started)
        committed = [bool(r) for r in replies]
        if self._state_sizes is not None:
            self._state_sizes([size for size, ok in zip(sizes, committed) if ok])
        return committed

    async def install(self, installs: Sequence[Install]) -> list[bool]:
        if not installs:
            return []
        keys = [self.keys.version, *(self.keys.watchlist(o) for o in self._outputs)]
        args: list[bytes | str | int] = [self._ttl_ms, len(self._outputs)]
        for install in installs:
            state = install.state
            latest = state.latest
            assert latest is not None, "a rebuilt state has the score of its last event"
            keys += self._keys(latest.entity_id)
            args.append(
                _pack(
                    [
                        b"%d" % install.expected_step,
                        latest.entity_id.encode(),
                        *[repr(float(latest.risk[o])).encode() for o in self._outputs],
                        b"%d" % state.step,
                        repr(state.last_time).encode(),
                        state.model_key.encode(),
                        encode_score(latest),
                        encode_score(state.previous) if state.previous is not None else b"",
                        orjson.dumps(state.alerts),
                    ]
                )
            )
            args.append(self._blob.encode(state.tensors))
            args.append(len(install.recent))
            recent: list[bytes] = []
            for score in install.recent:
                recent += [score.event_id.encode(), encode_score(score)]
            args.append(_pack(recent))
        async with redis_errors():
            started = time.perf_counter()
            replies = await self._install(keys=keys, args=args)
            self._observe("install", time.perf_counter() - started)
        return [bool(r) for r in replies]

    async def get(self, entity_id: str) -> EntityState | None:
        async with redis_errors():
            row: list[bytes | None] = await self._r.hmget(  # type: ignore[assignment]
                self._keys(entity_id)[0], _FIELDS
            )
        return self._decode(row)

    async def forget(self, entity_id: str) -> bool:
        async with redis_errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(*self._keys(entity_id))
            for output in self._outputs:
                pipe.zrem(self.keys.watchlist(output), entity_id)
            pipe.incr(self.keys.version)
            deleted, *_ = await pipe.execute()
        return bool(deleted)

    async def ping(self) -> None:
        async with redis_errors():
            await self._r.ping()
