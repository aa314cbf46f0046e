"""The domain: each event advances its entity's state one step and yields a score."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

FeatureValues = Mapping[str, float | None]

# The one character set of entity and event ids: what a URL path segment carries unescaped
# (RFC 3986 unreserved characters, ':' and '@'), starting with a letter or digit so that no id is
# "." or "..", which clients and proxies normalise away. Every route can address such an id.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._~:@-]*$"

# The largest step the score log holds (its step column is a 32-bit integer in PostgreSQL).
MAX_STEP = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Event:
    entity_id: str
    event_id: str
    time: float  # seconds since the Unix epoch, UTC
    values: FeatureValues
    key: str | None = None  # the name of the API key that posted it (audit); None: AUTH off


@dataclass(frozen=True, slots=True)
class Score:
    score_id: str
    entity_id: str
    event_id: str
    step: int  # how many events the entity has had, this one included
    event_time: float
    scored_at: float
    model_name: str
    model_version: str
    risk: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class LoggedScore:
    """What goes to the score log: the score and the event as received, for audit and replay."""

    score: Score
    values: FeatureValues
    key_name: str | None = None  # the API key that posted the event (audit)


@dataclass(slots=True)
class EntityState:
    """An entity's recurrent state as stored between events."""

    step: int  # version for compare-and-set: events applied so far
    last_time: float
    model_key: str  # "name/version" of the model that made ``tensors``
    tensors: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (L, H) float32
    latest: Score | None = None
    previous: Score | None = None  # the score before ``latest``, for the change between them
    alerts: dict[str, float] = field(default_factory=dict)  # output -> time the alert began


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the state store knows of an entity when one of its events arrives."""

    state: EntityState | None
    seen: Score | None  # the earlier score of the same event_id, if it is still remembered


@dataclass(frozen=True, slots=True)
class Commit:
    """Advance one entity from ``expected_step`` to ``state.step``, logging ``logged``."""

    expected_step: int
    state: EntityState
    logged: LoggedScore


@dataclass(frozen=True, slots=True)
class Install:
    """Put a state rebuilt from the event log in place of the stored one if that is still at
    ``expected_step`` (0: none stored), with the entity's recent scores as its dedup history
    (oldest first)."""

    expected_step: int
    state: EntityState
    recent: tuple[Score, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    score: Score
    duplicate: bool
    # the entity's state was missing (Redis emptied, expired) or of another model version, and
    # was rebuilt from the event log before this event (``riskstream.core.replay``)
    rehydrated: bool = False


@dataclass(frozen=True, slots=True)
class Watched:
    """An entity on the watchlist, or asked for its latest risk: its current state's summary."""

    entity_id: str
    step: int
    last_time: float
    latest: Score
    previous: Score | None
    alerts: dict[str, float]


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One committed score in the feed, with the entity's alerts after it."""

    cursor: str
    score: Score
    alerts: dict[str, float]


@dataclass(frozen=True, slots=True)
class FeedPage:
    """Feed entries after a cursor, and the cursor of the last entry read: past the entries a
    reader skipped as unreadable too, so a poller never reads the same broken one again."""

    entries: list[FeedEntry]
    cursor: str | None
