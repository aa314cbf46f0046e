"""The small interfaces the core needs from the outside world. Adapters implement them."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np

from riskstream.core.domain import (
    Commit,
    EntityState,
    FeedPage,
    Install,
    LoggedScore,
    Score,
    Snapshot,
    Watched,
)
from riskstream.core.keys import KeyInfo, StoredKey
from riskstream.core.manifest import Manifest

# (operation, seconds): how adapters report the latency of their round trips
Observe = Callable[[str, float], None]


def ignore(op: str, seconds: float) -> None:
    pass


class RiskModel(Protocol):
    manifest: Manifest

    def step(
        self, x: np.ndarray, dt: np.ndarray, states: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """x (B, F), dt (B, 1), states name -> (L, B, H)  ->  risk (B, K), next states."""
        ...


class StateStore(Protocol):
    async def load(self, keys: Sequence[tuple[str, str]]) -> list[Snapshot]:
        """Per (entity_id, event_id): the entity's state and the remembered score of that event."""
        ...

    async def commit(self, commits: Sequence[Commit]) -> list[bool]:
        """Compare-and-set each entity's state and append its score to the outbox, atomically per
        entity. False where another writer advanced the entity first."""
        ...

    async def install(self, installs: Sequence[Install]) -> list[bool]:
        """Compare-and-set each entity's state to one rebuilt from the event log, with its dedup
        history and its place on the watchlists; no score is logged (the log already has them).
        False where the stored step is no longer ``expected_step``."""
        ...

    async def get(self, entity_id: str) -> EntityState | None: ...

    async def forget(self, entity_id: str) -> bool: ...

    async def ping(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Undecodable:
    """An outbox entry that is not a score this service can read (``error`` says why)."""

    error: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An outbox entry to set aside: it can never reach the score log as it is."""

    entry_id: str
    error: str
    entity_id: str | None = None
    event_id: str | None = None


class Outbox(Protocol):
    """Scores committed with the state and not yet in the score log."""

    async def claim(
        self, limit: int, *, block_ms: int = 0
    ) -> list[tuple[str, LoggedScore | Undecodable]]:
        """Up to ``limit`` entries not yet acknowledged, waiting up to ``block_ms`` for one."""
        ...

    async def ack(self, ids: Sequence[str]) -> None: ...

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        """Move these claimed entries, as they were stored, to the dead letters (and ack them)."""
        ...

    async def backlog(self) -> int: ...

    async def dead_letters_waiting(self) -> int: ...

    async def intact(self) -> bool:
        """False, once, when the outbox's store was found emptied since the last call (every
        entry it held then is lost); it is then marked again."""
        ...


class ScoreLog(Protocol):
    async def append(self, records: Sequence[LoggedScore]) -> int:
        """Insert, ignoring records already present (by score_id). Returns how many were new."""
        ...

    async def history(
        self, entity_id: str, *, since: datetime | None, after_step: int | None, limit: int
    ) -> list[Score]: ...

    async def history_with_values(
        self, entity_id: str, *, since: datetime | None, after_step: int | None, limit: int
    ) -> list[LoggedScore]: ...

    async def find(self, entity_id: str, event_id: str) -> Score | None: ...

    async def ping(self) -> None: ...


class EventLog(Protocol):
    """The event log read back for replay: what the score log holds, by entity."""

    async def stays(self, entity_ids: Sequence[str]) -> dict[str, list[LoggedScore]]:
        """Each entity's current stay, in step order: its logged events from its latest first
        step on (a DELETE ends a stay; the next event starts one at step 1). Absent: an entity
        with no logged events, or whose latest deletion came after its latest event."""
        ...

    async def entity_ids(self, *, after: str | None, limit: int) -> list[str]:
        """Entities with logged events, in id order, after ``after``: pages for a full replay."""
        ...


class AuditLog(Protocol):
    """Who did what that the score log does not show by itself: deletions of entities."""

    async def record_deletion(self, key_name: str | None, entity_id: str) -> None:
        """Write (key, entity, now) durably; ``Unavailable`` if it cannot."""
        ...


class Views(Protocol):
    """The read side dashboards poll, kept by the same commit as the state. Readers skip (and
    count) a record they cannot read rather than fail everyone's request over it."""

    async def version(self) -> int:
        """Changes whenever any entity's score or state does: the basis of ETags."""
        ...

    async def watched(self, entity_id: str) -> Watched | None:
        """The entity's latest score and state summary; None if it has none. Raises
        ``UnreadableRecord`` if its record cannot be read."""
        ...

    async def watchlist(self, output: str, *, min_risk: float, limit: int) -> list[Watched]: ...

    async def feed(self, cursor: str | None, limit: int) -> FeedPage:
        """Scores committed after ``cursor`` (from the oldest kept if None), oldest first."""
        ...

    async def last_cursor(self) -> str | None: ...


class KeyStore(Protocol):
    """Where API keys live (SQL). The authenticator reads through ``find``; the rest is for
    operators (CLI, admin routes)."""

    async def find(self, key_id: str) -> StoredKey | None: ...

    async def touch(self, used: Mapping[str, float]) -> None:
        """Record when keys were last used (key id -> epoch seconds); never moves a time back."""
        ...

    async def create(self, key: StoredKey) -> None:
        """Store a new key; ``AlreadyExists`` if its name is taken (revoked keys keep theirs)."""
        ...

    async def list(self) -> list[KeyInfo]: ...

    async def revoke(self, name: str) -> bool:
        """False if no key has that name. Revoking twice is not an error."""
        ...

    async def count(self) -> int: ...


@dataclass(frozen=True, slots=True)
class BucketTake:
    """One step on a key's token bucket: first give back ``give_back`` tokens this worker leased
    and did not spend, then take ``cost`` (decided exactly as a take alone), then, if that was
    allowed, lease up to ``lease`` more whole tokens of what is left (``core/rate_leases.py``).
    A cost of 0 only gives back."""

    bucket: str
    cost: int
    give_back: int = 0
    lease: int = 0


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after_s: float  # 0 when allowed; else until the bucket holds what was asked
    remaining: float  # tokens left after this request (negative: a bulk request's debt)
    server_time: float  # the bucket store's clock when it decided, epoch seconds
    leased: int = 0  # tokens leased to the caller on top of the cost

    @property
    def retry_after(self) -> int:
        """For the ``Retry-After`` header: whole seconds, at least 1."""
        return max(1, math.ceil(self.retry_after_s))


class TokenBuckets(Protocol):
    """Per-key token buckets shared by every worker (Redis), refilled at ``rate`` per second up
    to ``burst``."""

    async def take_many(
        self, takes: Sequence[BucketTake], *, rate: float, burst: int
    ) -> list[RateDecision]:
        """Decide ``takes`` in order, atomically, in one round trip (a bucket named twice sees
        the first take); one decision per take."""
        ...
