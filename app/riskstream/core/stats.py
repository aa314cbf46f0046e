"""What the core reports about its work; the metrics adapter turns it into Prometheus series."""

from __future__ import annotations

from typing import Protocol


class EngineStats(Protocol):
    def model_step(self, batch: int, seconds: float) -> None: ...

    def batch(self, events: int, queue_wait_s: float) -> None: ...

    def cas_conflicts(self, count: int) -> None: ...

    def duplicates(self, count: int) -> None: ...

    def out_of_order(self, count: int) -> None: ...

    def rehydrated(self, entities: int, events: int) -> None:
        """States rebuilt from the event log before an event, and the model steps it took."""
        ...

    def rehydration_failed(self, entities: int) -> None:
        """Entities without a state scored afresh because the event log could not be read."""
        ...


class NoStats:
    def model_step(self, batch: int, seconds: float) -> None:
        pass

    def batch(self, events: int, queue_wait_s: float) -> None:
        pass

    def cas_conflicts(self, count: int) -> None:
        pass

    def duplicates(self, count: int) -> None:
        pass

    def out_of_order(self, count: int) -> None:
        pass

    def rehydrated(self, entities: int, events: int) -> None:
        pass

    def rehydration_failed(self, entities: int) -> None:
        pass
