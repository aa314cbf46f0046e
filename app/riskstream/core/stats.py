"""What the core reports about its work; the metrics adapter turns it into Prometheus series."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

# What became of an event sent to be scored (``riskstream_events_total{outcome}``): scored (a
# new step), a duplicate (answered with the first result), late (refused as earlier than the
# entity's last event), invalid (refused input) or unavailable (Redis or the database down, or
# the entity contended past the retries). Each event is counted once, under one of these.
EventOutcome = Literal["scored", "duplicate", "late", "invalid", "unavailable"]
OUTCOMES: tuple[EventOutcome, ...] = ("scored", "duplicate", "late", "invalid", "unavailable")


class EngineStats(Protocol):
    def model_step(self, batch: int, seconds: float) -> None: ...

    def queue_wait(self, seconds: float) -> None: ...

    def cas_conflicts(self, count: int) -> None: ...

    def rehydrated(self, entities: int, events: int) -> None:
        """States rebuilt from the event log before an event, and the model steps it took."""
        ...

    def rehydration_failed(self, entities: int) -> None:
        """Entities without a state scored afresh because the event log could not be read."""
        ...


class EventStats(Protocol):
    def events(self, outcome: EventOutcome, count: int) -> None: ...


class StateStats(Protocol):
    def state_sizes(self, sizes: Sequence[int]) -> None:
        """The bytes of each entity state committed (the stored record, tensors and all)."""
        ...


class NoStats:
    def model_step(self, batch: int, seconds: float) -> None:
        pass

    def queue_wait(self, seconds: float) -> None:
        pass

    def cas_conflicts(self, count: int) -> None:
        pass

    def events(self, outcome: EventOutcome, count: int) -> None:
        pass

    def rehydrated(self, entities: int, events: int) -> None:
        pass

    def rehydration_failed(self, entities: int) -> None:
        pass
