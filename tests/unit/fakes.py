"""In-memory fakes of the core's ports, for unit tests of the core only."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import numpy as np
from riskstream.core.domain import (
    Commit,
    EntityState,
    FeedEntry,
    FeedPage,
    Install,
    LoggedScore,
    Score,
    Snapshot,
    Watched,
)
from riskstream.core.errors import Unavailable
from riskstream.core.manifest import Manifest
from riskstream.core.ports import BucketTake, DeadLetter, RateDecision, Undecodable


def manifest(version: str = "1") -> Manifest:
    return Manifest.model_validate(
        {
            "name": "fake",
            "version": version,
            "features": [{"name": "a"}, {"name": "b"}],
            "outputs": [{"name": "risk"}],
            "states": [{"name": "h", "shape": [1, 2]}],
        }
    )


class FakeModel:
    """h' = h / 2 + [sum of present values, dt]; risk = sigmoid(h'[0])."""

    def __init__(self, version: str = "1") -> None:
        self.manifest = manifest(version)
        self.batch_sizes: list[int] = []

    def step(
        self, x: np.ndarray, dt: np.ndarray, states: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        self.batch_sizes.append(len(x))
        h = states["h"]  # (1, B, 2)
        add = np.stack([np.nansum(x, axis=1), dt[:, 0]], axis=1)  # (B, 2)
        h_next = (h / 2 + add[None]).astype(np.float32)
        risk = 1 / (1 + np.exp(-h_next[0, :, :1]))  # (B, 1)
        return risk.astype(np.float32), {"h": h_next}


class FakeStore:
    def __init__(self) -> None:
        self.states: dict[str, EntityState] = {}
        self.seen: dict[tuple[str, str], Score] = {}
        self.outbox: list[LoggedScore] = []
        self.interfere: list[str] = []  # entities another writer advances before our next commit
        self.down: Unavailable | None = None  # raised by every load: Redis away

    async def load(self, keys: Sequence[tuple[str, str]]) -> list[Snapshot]:
        if self.down is not None:
            raise self.down
        return [Snapshot(self.states.get(e), self.seen.get((e, ev))) for e, ev in keys]

    async def commit(self, commits: Sequence[Commit]) -> list[bool]:
        results = []
        for c in commits:
            entity = c.logged.score.entity_id
            if entity in self.interfere:
                self.interfere.remove(entity)
                current = self.states[entity]
                self.states[entity] = EntityState(
                    current.step + 1,
                    current.last_time,
                    current.model_key,
                    current.tensors,
                    current.latest,
                )
            current_step = self.states[entity].step if entity in self.states else 0
            if current_step != c.expected_step:
                results.append(False)
                continue
            self.states[entity] = c.state
            self.seen[(entity, c.logged.score.event_id)] = c.logged.score
            self.outbox.append(c.logged)
            results.append(True)
        return results

    async def install(self, installs: Sequence[Install]) -> list[bool]:
        results = []
        for i in installs:
            assert i.state.latest is not None
            entity = i.state.latest.entity_id
            current_step = self.states[entity].step if entity in self.states else 0
            if current_step != i.expected_step:
                results.append(False)
                continue
            self.states[entity] = i.state
            self.seen = {k: v for k, v in self.seen.items() if k[0] != entity}
            self.seen.update(((entity, s.event_id), s) for s in i.recent)
            results.append(True)
        return results

    async def get(self, entity_id: str) -> EntityState | None:
        return self.states.get(entity_id)

    async def forget(self, entity_id: str) -> bool:
        return self.states.pop(entity_id, None) is not None

    async def ping(self) -> None:
        return None


class FakeLog:
    """``refuse``: score ids whose insert fails (the whole batch, as one transaction would);
    ``down``: every call is ``Unavailable``."""

    def __init__(self) -> None:
        self.scores: dict[str, LoggedScore] = {}
        self.refuse: set[str] = set()
        self.down = False
        self.appends = 0

    async def append(self, records: Sequence[LoggedScore]) -> int:
        self.appends += 1
        if self.down:
            raise Unavailable("the database is unreachable", field="database")
        for r in records:
            if r.score.score_id in self.refuse:
                raise OverflowError(f"date value out of range\n[parameters: {r.values}]")
        new = [r for r in records if r.score.score_id not in self.scores]
        self.scores.update((r.score.score_id, r) for r in new)
        return len(new)

    async def history(
        self, entity_id: str, *, since: datetime | None, after_step: int | None, limit: int
    ) -> list[Score]:
        rows = sorted(
            (r.score for r in self.scores.values() if r.score.entity_id == entity_id),
            key=lambda s: s.step,
        )
        return rows[:limit]

    async def history_with_values(
        self, entity_id: str, *, since: datetime | None, after_step: int | None, limit: int
    ) -> list[LoggedScore]:
        page = await self.history(entity_id, since=since, after_step=after_step, limit=limit)
        return [self.scores[s.score_id] for s in page]

    async def stays(self, entity_ids: Sequence[str]) -> dict[str, list[LoggedScore]]:
        """Every logged score of the entity in step order (the fakes know no DELETE)."""
        if self.down:
            raise Unavailable("the database is unreachable", field="database")
        stays: dict[str, list[LoggedScore]] = {}
        for r in self.scores.values():
            if r.score.entity_id in entity_ids:
                stays.setdefault(r.score.entity_id, []).append(r)
        return {e: sorted(rs, key=lambda r: r.score.step) for e, rs in stays.items()}

    async def entity_ids(self, *, after: str | None, limit: int) -> list[str]:
        ids = sorted({r.score.entity_id for r in self.scores.values()})
        return [e for e in ids if after is None or e > after][:limit]

    async def find(self, entity_id: str, event_id: str) -> Score | None:
        for r in self.scores.values():
            if (r.score.entity_id, r.score.event_id) == (entity_id, event_id):
                return r.score
        return None

    async def ping(self) -> None:
        return None


class FakeOutbox:
    """Reads what the store committed; keeps entries until acked or set aside as dead letters.
    ``emptied()`` makes the next ``intact`` say False once, as a Redis that lost its data."""

    def __init__(self, store: FakeStore) -> None:
        self._store = store
        self._taken = 0
        self._next = 0
        self.pending: dict[str, LoggedScore | Undecodable] = {}
        self.acked: list[str] = []
        self.dead: list[DeadLetter] = []
        self._emptied = False
        self.marker_error: Exception | None = None  # raised by ``intact``

    def _pull(self) -> None:
        for logged in self._store.outbox[self._taken :]:
            self.add(logged)
        self._taken = len(self._store.outbox)

    def add(self, entry: LoggedScore | Undecodable) -> str:
        entry_id = f"{self._next}-0"
        self._next += 1
        self.pending[entry_id] = entry
        return entry_id

    async def claim(
        self, limit: int, *, block_ms: int = 0
    ) -> list[tuple[str, LoggedScore | Undecodable]]:
        self._pull()
        return list(self.pending.items())[:limit]

    async def ack(self, ids: Sequence[str]) -> None:
        self.acked += ids
        for entry_id in ids:
            del self.pending[entry_id]

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            del self.pending[letter.entry_id]
        self.dead += letters

    async def backlog(self) -> int:
        self._pull()
        return len(self.pending)

    async def dead_letters_waiting(self) -> int:
        return len(self.dead)

    def emptied(self) -> None:
        self._emptied = True

    async def intact(self) -> bool:
        if self.marker_error is not None:
            raise self.marker_error
        intact, self._emptied = not self._emptied, False
        return intact


class FakeDrainStats:
    def __init__(self) -> None:
        self.dead = 0
        self.waiting = 0
        self.emptied = 0
        self.lags: list[float] = []

    def sql_commit_lags(self, seconds: Sequence[float]) -> None:
        self.lags += seconds

    def dead_lettered(self, count: int) -> None:
        self.dead += count

    def dead_letters_waiting(self, count: int) -> None:
        self.waiting = count

    def redis_emptied(self) -> None:
        self.emptied += 1


class FakeViews:
    """The read side of a FakeStore: what the Redis views show of its states."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store

    async def version(self) -> int:
        return sum(s.step for s in self.store.states.values())

    async def watched(self, entity_id: str) -> Watched | None:
        s = self.store.states.get(entity_id)
        if s is None or s.latest is None:
            return None
        return Watched(entity_id, s.step, s.last_time, s.latest, s.previous, dict(s.alerts))

    async def watchlist(self, output: str, *, min_risk: float, limit: int) -> list[Watched]:
        rows = [w for e in self.store.states if (w := await self.watched(e)) is not None]
        rows = [w for w in rows if w.latest.risk[output] >= min_risk]
        return sorted(rows, key=lambda w: -w.latest.risk[output])[:limit]

    async def feed(self, cursor: str | None, limit: int) -> FeedPage:
        entries = [
            FeedEntry(f"{i}-0", logged.score, {}) for i, logged in enumerate(self.store.outbox)
        ]
        after = int(cursor.split("-")[0]) + 1 if cursor else 0
        page = entries[after : after + limit]
        return FeedPage(page, page[-1].cursor if page else None)

    async def last_cursor(self) -> str | None:
        return f"{len(self.store.outbox) - 1}-0" if self.store.outbox else None


class FakeBuckets:
    """The TokenBuckets port in memory: the arithmetic of ``lua/token_buckets.lua`` on a fake
    clock. A call lets ``turns()`` event-loop turns pass before it decides, as a round trip
    would, so other takes arrive meanwhile; it fails while ``down``."""

    def __init__(self, clock: Callable[[], float], turns: Callable[[], int] = lambda: 1) -> None:
        self.clock = clock
        self.turns = turns
        self.buckets: dict[str, tuple[float, float]] = {}  # tokens, ts
        self.calls = 0
        self.down = False
        self.gate: asyncio.Event | None = None
        self.called = asyncio.Event()  # set by every call

    def tokens(self, bucket: str, *, rate: float, burst: int) -> float:
        tokens, ts = self.buckets.get(bucket, (burst, self.clock()))
        return min(burst, tokens + max(0.0, self.clock() - ts) * rate)

    async def take_many(
        self, takes: Sequence[BucketTake], *, rate: float, burst: int
    ) -> list[RateDecision]:
        self.calls += 1
        self.called.set()
        for _ in range(self.turns()):
            await asyncio.sleep(0)
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise Unavailable("Redis is unreachable", field="redis")
        now = self.clock()
        out = []
        for take in takes:
            tokens = min(burst, self.tokens(take.bucket, rate=rate, burst=burst) + take.give_back)
            need = min(take.cost, burst)
            if tokens >= need:
                tokens -= take.cost
                leased = min(take.lease, math.floor(tokens)) if tokens >= 1 else 0
                tokens -= leased
                out.append(RateDecision(True, 0.0, tokens, now, leased))
            else:
                out.append(RateDecision(False, (need - tokens) / rate, tokens, now))
            self.buckets[take.bucket] = (tokens, now)
        return out
