"""The bench scenario: simulated ICU patients, each with its own event stream."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DAY = 86_400.0
# The service refuses event times more than EVENT_TIME_MAX_AHEAD_S after its clock, so the
# simulated stays start this far back: a year of the default 15-minute gaps is 35,000 events per
# patient, more than the longest bench run sends (MAX_EVENTS over the default 10,000 entities).
HISTORY_DAYS = 365


def start_time(now: float | None = None) -> float:
    """Midnight UTC ``HISTORY_DAYS`` before today: the day the scenario's patients are admitted."""
    today = (time.time() if now is None else now) // DAY * DAY
    return today - HISTORY_DAYS * DAY


# name -> (mean, sd, low, high, share of events that carry it)
_VITAL = 0.85
_LAB = 0.08
RANGES: dict[str, tuple[float, float, float, float, float]] = {
    "HR": (86, 16, 30, 200, _VITAL),
    "O2Sat": (97, 2.5, 70, 100, _VITAL),
    "Temp": (37.0, 0.7, 34, 41.5, 0.35),
    "SBP": (122, 20, 60, 220, _VITAL),
    "MAP": (81, 13, 40, 150, _VITAL),
    "DBP": (63, 11, 25, 120, 0.7),
    "Resp": (19, 4.5, 6, 45, _VITAL),
    "EtCO2": (34, 6, 10, 60, 0.05),
    "BaseExcess": (-0.5, 3.5, -20, 15, _LAB),
    "HCO3": (24, 3.5, 10, 40, _LAB),
    "FiO2": (0.45, 0.15, 0.21, 1.0, 0.12),
    "pH": (7.38, 0.07, 6.9, 7.6, _LAB),
    "PaCO2": (41, 8, 15, 90, _LAB),
    "SaO2": (94, 4, 60, 100, 0.05),
    "AST": (80, 60, 5, 2000, 0.02),
    "BUN": (24, 15, 2, 150, _LAB),
    "Alkalinephos": (95, 45, 10, 800, 0.02),
    "Calcium": (8.4, 0.7, 5, 12, _LAB),
    "Chloride": (105, 5, 85, 130, _LAB),
    "Creatinine": (1.3, 0.9, 0.2, 10, _LAB),
    "Bilirubin_direct": (0.6, 0.8, 0.05, 20, 0.01),
    "Glucose": (132, 40, 40, 500, 0.18),
    "Lactate": (2.1, 1.3, 0.3, 15, 0.04),
    "Magnesium": (2.0, 0.3, 0.8, 4, _LAB),
    "Phosphate": (3.5, 1.1, 0.5, 10, _LAB),
    "Potassium": (4.1, 0.55, 2.2, 7.5, 0.1),
    "Bilirubin_total": (1.1, 1.3, 0.1, 30, 0.02),
    "TroponinI": (0.3, 0.8, 0.0, 30, 0.01),
    "Hct": (31, 5, 15, 55, _LAB),
    "Hgb": (10.4, 1.9, 5, 18, _LAB),
    "PTT": (36, 12, 18, 150, 0.03),
    "WBC": (11.5, 5, 0.3, 60, _LAB),
    "Fibrinogen": (290, 110, 50, 900, 0.01),
    "Platelets": (205, 95, 5, 800, _LAB),
}
_DEMOGRAPHICS = ("Age", "Gender", "Unit1", "Unit2", "HospAdmTime")
_NULL_SHARE = 0.04  # of the carried values, sent as explicit null ("not measured")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


class Patient:
    """One entity's stream: its own baseline values and strictly increasing event times."""

    __slots__ = (
        "admitted",
        "baseline",
        "committed_time",
        "entity_id",
        "has_iculos",
        "last_accepted",
        "path",
        "rng",
        "sent_time",
        "seq",
        "static",
    )

    def __init__(
        self, entity_id: str, rng: random.Random, features: Sequence[str], t0: float
    ) -> None:
        self.entity_id = entity_id
        self.path = f"/v1/entities/{entity_id}/events"
        self.rng = rng
        self.seq = 0
        self.admitted = t0 + rng.uniform(0, DAY)
        self.sent_time = self.admitted  # the latest time sent (new events only)
        self.committed_time: float | None = None  # the latest time the server accepted
        self.last_accepted: dict[str, Any] | None = None  # body of the latest accepted event
        self.baseline: dict[str, float] = {}
        self.static: dict[str, float] = {}
        for name in features:
            spec = RANGES.get(name)
            if spec is not None:
                mean, sd, low, high, _share = spec
                self.baseline[name] = min(high, max(low, rng.gauss(mean, sd)))
            elif name not in _DEMOGRAPHICS and name != "ICULOS":
                # a feature this scenario does not know: a standard normal, now and then
                self.baseline[name] = rng.gauss(0, 1)
        if "Age" in features:
            self.static["Age"] = round(min(100.0, max(18.0, rng.gauss(63, 16))))
        if "Gender" in features:
            self.static["Gender"] = float(rng.random() < 0.56)
        if "Unit1" in features or "Unit2" in features:
            micu = rng.random() < 0.5
            self.static["Unit1"], self.static["Unit2"] = float(micu), float(not micu)
        if "HospAdmTime" in features:
            self.static["HospAdmTime"] = -round(rng.expovariate(1 / 30), 2)
        self.has_iculos = "ICULOS" in features

    def values(self, t: float) -> dict[str, float | None]:
        rng = self.rng
        out: dict[str, float | None] = {}
        if self.seq == 1:
            out.update(self.static)
        for name, base in self.baseline.items():
            spec = RANGES.get(name)
            share = spec[4] if spec else 0.3
            if rng.random() >= share:
                continue
            if rng.random() < _NULL_SHARE:
                out[name] = None
                continue
            if spec is None:
                out[name] = round(base + rng.gauss(0, 0.3), 3)
                continue
            _mean, sd, low, high, _ = spec
            # drift a little around the patient's own baseline
            value = min(high, max(low, base + rng.gauss(0, sd * 0.25)))
            out[name] = round(value, 2)
        if self.has_iculos:
            out["ICULOS"] = max(1.0, round((t - self.admitted) / 3600.0, 2))
        return out

    def next_event(self, gap_mean_s: float) -> dict[str, Any]:
        self.seq += 1
        t = self.sent_time + max(1.0, round(self.rng.expovariate(1.0 / gap_mean_s)))
        self.sent_time = t
        return {"event_id": f"e{self.seq}", "time": _iso(t), "values": self.values(t)}

    def late_event(self) -> dict[str, Any]:
        assert self.committed_time is not None
        self.seq += 1
        t = self.committed_time - self.rng.uniform(60, 7_200)
        return {"event_id": f"e{self.seq}-late", "time": _iso(t), "values": {"HR": 90.0}}


NEW, DUPLICATE, LATE = "new", "duplicate", "late"


@dataclass
class Scenario:
    entities: int
    dup_rate: float
    late_rate: float
    gap_mean_s: float
    seed: int
    features: list[str]
    run_id: str
    t0: float = field(default_factory=start_time)  # the patients are admitted in the day after

    def patients(self) -> list[Patient]:
        rng = random.Random(self.seed)
        return [
            Patient(
                f"bench-{self.run_id}-p{i:06d}",
                random.Random(rng.getrandbits(64)),
                self.features,
                self.t0,
            )
            for i in range(self.entities)
        ]

    def pick(self, p: Patient) -> tuple[str, dict[str, Any]]:
        """The next event of ``p``: a new one, a re-send of its last accepted, or a late one."""
        r = p.rng.random()
        if r < self.dup_rate and p.last_accepted is not None:
            return DUPLICATE, p.last_accepted
        if r < self.dup_rate + self.late_rate and p.committed_time is not None:
            return LATE, p.late_event()
        return NEW, p.next_event(self.gap_mean_s)


def expected(kind: str, status: int, accept_late: bool) -> bool:
    if kind == LATE:
        return status == 409 or (accept_late and status == 200)
    return status == 200


# -- HTTP clients --------------------------------------------------------------------------
