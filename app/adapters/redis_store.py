"""Entity state in Redis, advanced by an atomic compare-and-set that also fills the outbox.

Keys (``P`` is the configured prefix):
- ``P:s:<entity>`` hash: ``step``, ``t`` (last event time), ``mv`` (model name/version),
  ``latest`` (JSON score) and ``x:<state>`` raw float32 bytes of each state tensor ``(L, H)``.
- ``P:d:<entity>`` hash event_id -> JSON score, and ``P:o:<entity>`` list of those event ids,
  newest first, trimmed to the dedup history length.
- ``P:outbox`` stream of scores committed but not yet in the SQL log, read by group ``sql``.
- the read side kept in the same atomic update (``redis_views.py``): ``P:feed`` stream of every
  score in commit order, ``P:w:<output>`` sorted sets of current risk, ``P:version`` counter.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from app.adapters.codec import (
    decode_logged,
    decode_score,
    encode_logged,
    encode_score,
    score_to_dict,
)
from app.adapters.redis_common import ViewKeys, redis_errors
from app.core.domain import Commit, EntityState, LoggedScore, Snapshot
from app.core.manifest import StateSpec
from app.core.ports import Observe, ignore

# KEYS: state, seen, order, outbox, feed, version, then one watchlist per output.
# ARGV: expected step, event id, score JSON, dedup history, outbox entry, feed entry, feed length,
#       entity id, number of outputs, that many risks, then the state hash's field/value pairs.
_COMMIT = """
local cur = redis.call('HGET', KEYS[1], 'step')
if (tonumber(cur) or 0) ~= tonumber(ARGV[1]) then return 0 end
local n_out = tonumber(ARGV[9])
redis.call('HSET', KEYS[1], unpack(ARGV, 10 + n_out))
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
local n = redis.call('LPUSH', KEYS[3], ARGV[2])
local keep = tonumber(ARGV[4])
if n > keep then
  local old = redis.call('RPOP', KEYS[3], n - keep)
  redis.call('HDEL', KEYS[2], unpack(old))
end
redis.call('XADD', KEYS[4], '*', 'd', ARGV[5])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[7], '*', 'd', ARGV[6])
redis.call('INCR', KEYS[6])
for i = 1, n_out do
  redis.call('ZADD', KEYS[6 + i], ARGV[9 + i], ARGV[8])
end
return 1
"""

_GROUP = "sql"


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
        observe: Observe = ignore,
    ) -> None:
        self._r = client
        self._outputs = tuple(outputs)
        self._feed_length = feed_length
        self.keys = ViewKeys(prefix)
        self._observe = observe
        self._prefix = prefix
        self._specs = tuple(states)
        self._fields = [
            "step",
            "t",
            "mv",
            "latest",
            "prev",
            "alerts",
            *(f"x:{s.name}" for s in self._specs),
        ]
        self._history = dedup_history
        self._commit = client.register_script(_COMMIT)
        self.outbox_key = f"{prefix}:outbox"

    def _keys(self, entity_id: str) -> tuple[str, str, str]:
        p = self._prefix
        return f"{p}:s:{entity_id}", f"{p}:d:{entity_id}", f"{p}:o:{entity_id}"

    def _decode(self, row: list[bytes | None]) -> EntityState | None:
        step, t, mv, latest, prev, alerts, *raw = row
        if step is None or t is None or mv is None:
            return None
        tensors: dict[str, np.ndarray] = {}
        for spec, blob in zip(self._specs, raw):
            rows, cols = spec.shape
            if blob is None or len(blob) != rows * cols * 4:
                continue  # made by a model of another shape: the engine starts afresh
            tensors[spec.name] = np.frombuffer(blob, dtype=np.float32).reshape(rows, cols)
        return EntityState(
            step=int(step),
            last_time=float(t),
            model_key=mv.decode(),
            tensors=tensors,
            latest=decode_score(latest) if latest else None,
            previous=decode_score(prev) if prev else None,
            alerts=orjson.loads(alerts) if alerts else {},
        )

    async def load(self, keys: Sequence[tuple[str, str]]) -> list[Snapshot]:
        async with redis_errors():
            pipe = self._r.pipeline(transaction=False)
            for entity_id, event_id in keys:
                state_key, seen_key, _ = self._keys(entity_id)
                pipe.hmget(state_key, self._fields)
                pipe.hget(seen_key, event_id)
            started = time.perf_counter()
            replies = await pipe.execute()
            self._observe("load", time.perf_counter() - started)
        snapshots = []
        for i in range(len(keys)):
            row, seen = replies[2 * i], replies[2 * i + 1]
            snapshots.append(
                Snapshot(self._decode(row), decode_score(seen) if seen is not None else None)
            )
        return snapshots

    async def commit(self, commits: Sequence[Commit]) -> list[bool]:
        async with redis_errors():
            pipe = self._r.pipeline(transaction=False)
            for c in commits:
                state = c.state
                score = c.logged.score
                fields: list[bytes | str | int | float] = [
                    "step",
                    state.step,
                    "t",
                    repr(state.last_time),
                    "mv",
                    state.model_key,
                ]
                encoded = encode_score(score)
                fields += ["latest", encoded, "alerts", orjson.dumps(state.alerts)]
                if state.previous is not None:
                    fields += ["prev", encode_score(state.previous)]
                for name, tensor in state.tensors.items():
                    fields += [f"x:{name}", np.ascontiguousarray(tensor, np.float32).tobytes()]
                feed_entry = orjson.dumps({"score": score_to_dict(score), "alerts": state.alerts})
                await self._commit(
                    keys=[
                        *self._keys(score.entity_id),
                        self.outbox_key,
                        self.keys.feed,
                        self.keys.version,
                        *(self.keys.watchlist(o) for o in self._outputs),
                    ],
                    args=[
                        c.expected_step,
                        score.event_id,
                        encoded,
                        self._history,
                        encode_logged(c.logged),
                        feed_entry,
                        self._feed_length,
                        score.entity_id,
                        len(self._outputs),
                        *(repr(float(score.risk[o])) for o in self._outputs),
                        *fields,
                    ],
                    client=pipe,
                )
            started = time.perf_counter()
            replies = await pipe.execute()
            self._observe("commit", time.perf_counter() - started)
        return [bool(r) for r in replies]

    async def get(self, entity_id: str) -> EntityState | None:
        async with redis_errors():
            row: list[bytes | None] = await self._r.hmget(  # type: ignore[assignment]
                self._keys(entity_id)[0], self._fields
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


class RedisOutbox:
    """The outbox stream, read by a consumer group: a dead drainer's claims are taken over."""

    def __init__(self, client: aioredis.Redis, *, key: str, claim_idle_ms: int) -> None:
        self._r = client
        self._key = key
        self._idle = claim_idle_ms
        self._consumer = f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self._ready = False

    async def _ensure_group(self) -> None:
        if self._ready:
            return
        try:
            await self._r.xgroup_create(self._key, _GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._ready = True

    async def claim(self, limit: int, *, block_ms: int = 0) -> list[tuple[str, LoggedScore]]:
        """Entries idle too long in a (dead) consumer's hands first, then new ones."""
        async with redis_errors():
            await self._ensure_group()
            _, entries, *_ = await self._r.xautoclaim(
                self._key, _GROUP, self._consumer, self._idle, start_id="0-0", count=limit
            )
            entries = [e for e in entries if e and e[1]]  # ids deleted meanwhile come back empty
            if not entries:
                reply = await self._r.xreadgroup(
                    _GROUP,
                    self._consumer,
                    {self._key: ">"},
                    count=limit,
                    block=block_ms or None,
                )
                entries = reply[0][1] if reply else []  # type: ignore[index]
        return [(entry_id.decode(), decode_logged(fields[b"d"])) for entry_id, fields in entries]

    async def ack(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        async with redis_errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.xack(self._key, _GROUP, *ids)
            pipe.xdel(self._key, *ids)
            await pipe.execute()

    async def backlog(self) -> int:
        async with redis_errors():
            return int(await self._r.xlen(self._key))
