"""Alerting with hysteresis: raise at one level, clear only below a lower one, so an entity
hovering at the threshold does not flap."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Threshold:
    raise_at: float
    clear_below: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.clear_below <= self.raise_at <= 1.0:
            raise ValueError("need 0 <= clear_below <= raise_at <= 1")


def next_alerts(
    active: Mapping[str, float],
    risk: Mapping[str, float],
    thresholds: Mapping[str, Threshold],
    at: float,
) -> dict[str, float]:
    """Output name -> time the alert began, for the alerts active after this score."""
    alerts: dict[str, float] = {}
    for output, level in thresholds.items():
        p = risk.get(output)
        if p is None:
            continue
        since = active.get(output)
        if since is not None and p >= level.clear_below:
            alerts[output] = since
        elif since is None and p >= level.raise_at:
            alerts[output] = at
    return alerts
