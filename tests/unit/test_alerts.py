from __future__ import annotations

import pytest
from riskstream.core.alerts import Threshold, next_alerts

LEVELS = {"aki": Threshold(raise_at=0.5, clear_below=0.3)}


def run(risks: list[float]) -> list[float | None]:
    active: dict[str, float] = {}
    out = []
    for t, p in enumerate(risks):
        active = next_alerts(active, {"aki": p}, LEVELS, float(t))
        out.append(active.get("aki"))
    return out


def test_raises_at_the_upper_level_and_clears_only_below_the_lower() -> None:
    assert run([0.2, 0.49, 0.5, 0.4, 0.31, 0.3, 0.29, 0.45, 0.6]) == [
        None,
        None,
        2.0,
        2.0,
        2.0,
        2.0,
        None,
        None,
        8.0,
    ]


def test_hovering_at_the_threshold_does_not_flap() -> None:
    started = run([0.51, 0.49, 0.51, 0.48, 0.52, 0.47])
    assert started == [0.0] * 6


def test_levels_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        Threshold(raise_at=0.2, clear_below=0.3)
