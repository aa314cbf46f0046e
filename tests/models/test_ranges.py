"""The shipped manifests' plausible ranges refuse no real value: every value of the PhysioNet
sample (and of set A, where it is on this machine) and of the bench scenario lies inside."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from riskstream.bench.scenario import RANGES as BENCH_RANGES
from riskstream.core.manifest import load_manifest
from riskstream.demo import DEFAULT_DATA
from riskstream.settings import DEFAULT_MODEL_DIR

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = [
    REPO / "models/aki-lstm/1.2.0",
    REPO / "models/aki-lstm/1.1.0",
    REPO / "models/aki-lstm/1.0.0",
    REPO / "models/aki-lstm-gbm/1.0.0",
    REPO / "models/aki-lstm-gbm/1.1.0",
    REPO / "tests/fixtures/models/tiny/0.1.0",
]
SET_A = Path("/work/shared/data/physionet2019/setA.parquet")


def ranges(model_dir: Path) -> dict[str, tuple[float, float]]:
    declared = {f.name: f.range for f in load_manifest(model_dir).features}
    assert all(r is not None for r in declared.values()), f"{model_dir}: a feature lacks a range"
    return {name: r for name, r in declared.items() if r is not None}


def outside(table_path: Path, limits: dict[str, tuple[float, float]]) -> dict[str, list[float]]:
    """Per feature, the measured values (NaN = not measured) outside its range."""
    present = set(pq.read_schema(table_path).names)
    table = pq.read_table(table_path, columns=[c for c in limits if c in present])
    found: dict[str, list[float]] = {}
    for name, (low, high) in limits.items():
        if name not in present:
            continue
        column = pc.cast(table.column(name), "float64")
        values = [v for v in column.to_pylist() if v is not None and not math.isnan(v)]
        bad = [v for v in values if not low <= v <= high]
        if bad:
            found[name] = sorted(set(bad))[:5]
    return found


def test_the_default_model_is_the_one_checked() -> None:
    assert DEFAULT_MODEL_DIR.resolve() == MANIFESTS[0].resolve()


def test_every_value_of_the_physionet_sample_is_inside_the_default_ranges() -> None:
    limits = ranges(DEFAULT_MODEL_DIR)
    assert set(limits) <= set(pq.read_schema(DEFAULT_DATA).names)
    assert outside(DEFAULT_DATA, limits) == {}


@pytest.mark.skipif(not SET_A.exists(), reason="PhysioNet set A is not on this machine")
def test_every_value_of_physionet_set_a_is_inside_the_default_ranges() -> None:
    assert outside(SET_A, ranges(DEFAULT_MODEL_DIR)) == {}


@pytest.mark.parametrize("model_dir", MANIFESTS, ids=lambda p: "/".join(p.parts[-2:]))
def test_every_shipped_manifest_declares_the_same_ranges(model_dir: Path) -> None:
    assert ranges(model_dir) == ranges(DEFAULT_MODEL_DIR)


def test_the_bench_scenario_stays_inside_the_default_ranges() -> None:
    limits = ranges(DEFAULT_MODEL_DIR)
    for name, (_mean, _sd, low, high, _share) in BENCH_RANGES.items():
        assert limits[name][0] <= low and high <= limits[name][1], name
    # demographics: age 18–100, gender and unit flags 0/1
    assert limits["Age"][0] <= 18 and limits["Age"][1] >= 100
    assert all(limits[f] == (0.0, 1.0) for f in ("Gender", "Unit1", "Unit2"))


def test_the_exporter_writes_the_ranges_the_manifests_carry() -> None:
    pytest.importorskip("pandas")
    from riskstream_models.data import PLAUSIBLE_RANGES

    expected = {name: (float(lo), float(hi)) for name, (lo, hi) in PLAUSIBLE_RANGES.items()}
    assert ranges(DEFAULT_MODEL_DIR) == expected
    document = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    assert document["features"][0]["range"] == list(PLAUSIBLE_RANGES["HR"])
