"""What the core reports about its work; the metrics adapter turns it into Prometheus series."""

from __future__ import annotations

from typing import Protocol


class EngineStats(Protocol):
    def model_step(self, batch: int, seconds: float) -> None: ...

    def batch(self, events: int, queue_wait_s: float) -> None: ...

    def cas_conflicts(self, count: int) -> None: ...

    def duplicates(self, count: int) -> None: ...

    def out_of_order(self, count: int) -> None: ...


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
