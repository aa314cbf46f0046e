"""Event tables, labels and patient splits. numpy/pandas only: evaluate.py uses it too."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from riskstream.resources import resource

SETA = "/work/shared/data/physionet2019/setA.parquet"
# 200 set-A patients shipped for tests, demos and the export parity check: models/data/ in a
# checkout, riskstream/_bundled/demo/ when installed.
SAMPLE = str(resource("demo") / "physionet2019-sample.parquet")

# the 40 PhysioNet 2019 variables: name, unit, description (from the challenge documentation)
PHYSIONET_FEATURES = [
    ("HR", "beats/min", "Heart rate"),
    ("O2Sat", "%", "Pulse oximetry"),
    ("Temp", "deg C", "Temperature"),
    ("SBP", "mm Hg", "Systolic blood pressure"),
    ("MAP", "mm Hg", "Mean arterial pressure"),
    ("DBP", "mm Hg", "Diastolic blood pressure"),
    ("Resp", "breaths/min", "Respiration rate"),
    ("EtCO2", "mm Hg", "End-tidal carbon dioxide"),
    ("BaseExcess", "mmol/L", "Excess bicarbonate"),
    ("HCO3", "mmol/L", "Bicarbonate"),
    ("FiO2", "fraction", "Fraction of inspired oxygen"),
    ("pH", "", "Arterial pH"),
    ("PaCO2", "mm Hg", "Partial pressure of carbon dioxide from arterial blood"),
    ("SaO2", "%", "Oxygen saturation from arterial blood"),
    ("AST", "IU/L", "Aspartate transaminase"),
    ("BUN", "mg/dL", "Blood urea nitrogen"),
    ("Alkalinephos", "IU/L", "Alkaline phosphatase"),
    ("Calcium", "mg/dL", "Calcium"),
    ("Chloride", "mmol/L", "Chloride"),
    ("Creatinine", "mg/dL", "Creatinine"),
    ("Bilirubin_direct", "mg/dL", "Direct bilirubin"),
    ("Glucose", "mg/dL", "Serum glucose"),
    ("Lactate", "mg/dL", "Lactic acid"),
    ("Magnesium", "mmol/dL", "Magnesium"),
    ("Phosphate", "mg/dL", "Phosphate"),
    ("Potassium", "mmol/L", "Potassium"),
    ("Bilirubin_total", "mg/dL", "Total bilirubin"),
    ("TroponinI", "ng/mL", "Troponin I"),
    ("Hct", "%", "Hematocrit"),
    ("Hgb", "g/dL", "Hemoglobin"),
    ("PTT", "seconds", "Partial thromboplastin time"),
    ("WBC", "10^3/uL", "Leukocyte count"),
    ("Fibrinogen", "mg/dL", "Fibrinogen"),
    ("Platelets", "10^3/uL", "Platelet count"),
    ("Age", "years", "Age (100 for patients 90 or above)"),
    ("Gender", "", "Female (0) or male (1)"),
    ("Unit1", "", "Administrative identifier for ICU unit (MICU)"),
    ("Unit2", "", "Administrative identifier for ICU unit (SICU)"),
    ("HospAdmTime", "hours", "Hours between hospital admission and ICU admission"),
    ("ICULOS", "hours", "ICU length of stay (hours since ICU admission)"),
]
FEATURES = [f[0] for f in PHYSIONET_FEATURES]
# Generous physiological limits per variable, [low, high] inclusive, in the units above: the
# manifest's "range" (docs/model-contract.md), outside which the service refuses a value (422).
# Wide enough for every value of PhysioNet 2019 set A (tests/models/test_ranges.py checks the
# sample), they catch unit mix-ups and typos, not abnormal patients.
PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {
    "HR": (0, 400),  # set A: 20–280
    "O2Sat": (0, 100),
    "Temp": (10, 50),  # set A: 20.9–42.2
    "SBP": (0, 400),  # set A: 22–281
    "MAP": (0, 400),  # set A: 20–300
    "DBP": (0, 400),  # set A: 20–298
    "Resp": (0, 200),  # set A: 1–69
    "EtCO2": (0, 200),
    "BaseExcess": (-100, 150),  # set A: -32–100
    "HCO3": (0, 150),  # set A: 0–55
    "FiO2": (0, 100),  # a fraction; set A also has 10 (a percentage mix-up)
    "pH": (5, 9),  # set A: 6.62–7.93
    "PaCO2": (0, 400),  # set A: 10–100
    "SaO2": (0, 100),
    "AST": (0, 100_000),  # set A: 3–9,890
    "BUN": (0, 1_000),  # set A: 1–266
    "Alkalinephos": (0, 50_000),  # set A: 7–3,833
    "Calcium": (0, 50),  # set A: 1.6–22
    "Chloride": (0, 300),  # set A: 26–145
    "Creatinine": (0, 100),  # set A: 0.1–46.6
    "Bilirubin_direct": (0, 200),  # set A: 0.1–37.5
    "Glucose": (0, 5_000),  # set A: 10–988
    "Lactate": (0, 100),  # set A: 0.2–31
    "Magnesium": (0, 50),  # set A: 0.2–9.7
    "Phosphate": (0, 100),  # set A: 0.2–18.8
    "Potassium": (0, 50),  # set A: 1–27.5
    "Bilirubin_total": (0, 200),  # set A: 0.1–46.6
    "TroponinI": (0, 1_000),  # set A: 0.3–49.3
    "Hct": (0, 100),
    "Hgb": (0, 50),  # set A: 2.2–32
    "PTT": (0, 1_000),  # set A: 12.5–150
    "WBC": (0, 2_000),  # set A: 0.1–422.9
    "Fibrinogen": (0, 10_000),  # set A: 34–1,760
    "Platelets": (0, 10_000),  # set A: 5–1,783
    "Age": (0, 150),  # set A: 18.1–89 (100 stands for 90 or above)
    "Gender": (0, 1),
    "Unit1": (0, 1),
    "Unit2": (0, 1),
    "HospAdmTime": (-100_000, 10_000),  # hours; set A: -3,710.7–24
    "ICULOS": (0, 100_000),  # hours; set A: 1–336
}
OUTPUTS = [
    {
        "name": "aki_48h",
        "horizon_hours": 48,
        "description": "AKI onset (KDIGO creatinine criteria) within the next 48 h",
    },
    {
        "name": "sepsis",
        "horizon_hours": 6,
        "description": "Sepsis (PhysioNet SepsisLabel: clinical onset within 6 h, or ongoing)",
    },
]


@dataclass
class EventTable:
    """Events sorted by entity then time; arrays aligned row by row."""

    entity: np.ndarray  # (N,) entity id per row
    time: np.ndarray  # (N,) float64 hours since the entity's first event
    x: np.ndarray  # (N, F) float32 raw values, NaN when absent
    features: list[str]
    sepsis: np.ndarray | None  # (N,) float32 SepsisLabel if present
    starts: np.ndarray  # (E+1,) row offsets of each entity
    fingerprint: str

    def entities(self) -> np.ndarray:
        return self.entity[self.starts[:-1]]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """The row numbers of entities idx, entity by entity."""
        return np.concatenate([np.arange(self.starts[i], self.starts[i + 1]) for i in idx])

    def split(self, seed: int = 0) -> dict[str, np.ndarray]:
        """``split_entities`` as indices of this table's entities (for ``rows``)."""
        ents = self.entities()
        return {k: np.flatnonzero(np.isin(ents, v)) for k, v in split_entities(ents, seed).items()}

    def dt(self) -> np.ndarray:
        """(N,) hours since the entity's previous event, 0 for its first."""
        d = np.diff(self.time, prepend=0.0)
        d[self.starts[:-1]] = 0.0
        return d.astype(np.float32)


def load_events(
    path: str | Path,
    entity: str = "patient_id",
    time: str = "hour",
    features: list[str] | None = None,
    label: str = "SepsisLabel",
    entities: list[str] | None = None,
) -> EventTable:
    """Read a Parquet or CSV event table. `time` is numeric hours or a datetime column."""
    path = Path(path)
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    features = features or FEATURES
    missing = [f for f in features if f not in df.columns]
    if missing:  # e.g. another data set: an absent variable is simply never observed
        print(f"{path.name}: no column for {missing}; treated as never measured", file=sys.stderr)
        df = df.assign(**{f: np.nan for f in missing})
    if entities is not None:
        df = df[df[entity].isin(set(entities))]
    if not pd.api.types.is_numeric_dtype(df[time]):  # datetimes (CSV gives strings)
        df[time] = pd.to_datetime(df[time])
    df = df.sort_values([entity, time], kind="stable").reset_index(drop=True)
    t = df[time]
    if pd.api.types.is_datetime64_any_dtype(t):
        t = (t - t.groupby(df[entity]).transform("min")).dt.total_seconds() / 3600.0
    else:
        t = t.astype(np.float64) - t.groupby(df[entity]).transform("min").astype(np.float64)
    ent = df[entity].astype(str).to_numpy()
    starts = np.flatnonzero(np.r_[True, ent[1:] != ent[:-1], True])
    x = df[features].to_numpy(dtype=np.float32)
    sepsis = df[label].to_numpy(np.float32) if label in df.columns else None
    h = hashlib.sha256()
    h.update(ent.astype("U").tobytes())
    h.update(np.ascontiguousarray(x).tobytes())
    if sepsis is not None:
        h.update(sepsis.tobytes())
    return EventTable(
        ent, t.to_numpy(np.float64), x, list(features), sepsis, starts, "sha256:" + h.hexdigest()
    )


def measured_share(ev: EventTable, rows: np.ndarray | None = None) -> dict[str, float]:
    """Per feature, the share of events (rows, default all) in which it was measured."""
    x = ev.x if rows is None else ev.x[rows]
    seen = (~np.isnan(x)).mean(axis=0) if len(x) else np.zeros(len(ev.features))
    return {f: float(s) for f, s in zip(ev.features, seen, strict=True)}


def aki_onsets(t: np.ndarray, creat: np.ndarray) -> np.ndarray:
    """(T,) bool: KDIGO-style AKI onset at each event of one entity.

    Onset at t when creatinine is measured at t and is >= 0.3 mg/dL above the lowest creatinine
    measured in the 48 h before t, or >= 1.5 x the lowest measured in the 168 h before t.
    Measured values only: nothing is filled.
    """
    onset = np.zeros(len(t), dtype=bool)
    idx = np.flatnonzero(~np.isnan(creat))
    for j, i in enumerate(idx):
        prev = idx[:j]
        prev = prev[t[prev] < t[i]]  # strictly before t
        if len(prev) == 0:
            continue
        age = t[i] - t[prev]
        c = creat[prev]
        w48, w168 = c[age <= 48], c[age <= 168]
        if (len(w48) and creat[i] - w48.min() >= 0.3 - 1e-6) or (
            len(w168) and creat[i] >= 1.5 * w168.min() - 1e-6
        ):
            onset[i] = True
    return onset


def aki_labels(t: np.ndarray, creat: np.ndarray, horizon: float = 48.0):
    """(label, keep) for one entity: label 1 when an onset falls in (t, t+horizon];
    keep is True only for events strictly before the first onset."""
    onset_t = t[aki_onsets(t, creat)]
    label = np.zeros(len(t), dtype=np.float32)
    keep = np.ones(len(t), dtype=bool)
    if len(onset_t):
        keep = t < onset_t[0]
        for o in onset_t:
            label[(t < o) & (t >= o - horizon)] = 1.0
    return label, keep


def make_labels(ev: EventTable, creatinine: str = "Creatinine", horizon: float = 48.0):
    """(N,) AKI label, (N,) AKI keep mask, (N,) onset flag, for the whole table."""
    ci = ev.features.index(creatinine)
    label = np.zeros(len(ev.time), np.float32)
    keep = np.zeros(len(ev.time), bool)
    onset = np.zeros(len(ev.time), bool)
    for a, b in zip(ev.starts[:-1], ev.starts[1:], strict=False):
        t, c = ev.time[a:b], ev.x[a:b, ci].astype(np.float64)
        label[a:b], keep[a:b] = aki_labels(t, c, horizon)
        onset[a:b] = aki_onsets(t, c)
    return label, keep, onset


def split_entities(
    entities: np.ndarray, seed: int = 0, fractions=(0.6, 0.15, 0.1, 0.15)
) -> dict[str, np.ndarray]:
    """Patient-level split train/val/calib/test with a fixed seed (order-independent)."""
    ents = np.sort(np.unique(entities))
    perm = np.random.default_rng(seed).permutation(len(ents))
    cuts = np.cumsum([round(f * len(ents)) for f in fractions[:-1]])
    parts = np.split(ents[perm], cuts)
    return dict(zip(["train", "val", "calib", "test"], parts, strict=False))
