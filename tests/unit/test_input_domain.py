"""The engine's input domain: what ``check`` refuses never reaches the model or the store."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from riskstream.core.domain import Event, Outcome
from riskstream.core.engine import EVENT_TIME_MIN, FLOAT32_MAX, ScoringEngine
from riskstream.core.errors import InvalidInput, ModelContractError
from riskstream.core.manifest import Manifest, load_manifest

from tests.unit.fakes import FakeLog, FakeModel, FakeStore

NOW = 1_795_900_000.0  # 2026-11-29T19:46:40Z: the engine's clock in these tests
HOUR = 3600.0


class RangedModel(FakeModel):
    """The fake model, with a manifest declaring a plausible range for feature ``a``."""

    def __init__(self) -> None:
        super().__init__()
        document = self.manifest.as_document()
        document["features"][0] |= {"unit": "mg/dL", "range": [0.0, 50.0]}
        self.manifest = Manifest.model_validate(document)


class DtRecorder(FakeModel):
    def __init__(self) -> None:
        super().__init__()
        self.dts: list[np.ndarray] = []

    def step(
        self, x: np.ndarray, dt: np.ndarray, states: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        self.dts.append(dt.copy())
        return super().step(x, dt, states)


def make(
    model: FakeModel | None = None, **kwargs: float
) -> tuple[ScoringEngine, FakeModel, FakeStore]:
    model, store = model or FakeModel(), FakeStore()
    engine = ScoringEngine(model, store, FakeLog(), clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]
    return engine, model, store


async def refused(event: Event, field: str, model: FakeModel | None = None) -> InvalidInput:
    engine, model, store = make(model)
    [result] = await engine.score([event])
    assert isinstance(result, InvalidInput), result
    assert result.status == 422 and result.code == "invalid_input" and result.field == field
    assert store.states == {} and store.outbox == [] and model.batch_sizes == []
    return result


async def accepted(event: Event, model: FakeModel | None = None) -> Outcome:
    engine, _, store = make(model)
    [result] = await engine.score([event])
    assert isinstance(result, Outcome), result
    assert store.states[event.entity_id].step == 1
    return result


# -- ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "event", "field"),
    [
        ("ward/bed1", "e1", "entity_id"),
        ("p1", "a b", "event_id"),
        ("p1\n", "e1", "entity_id"),  # a trailing newline ('$' alone would let it pass)
        (".", "e1", "entity_id"),
        ("..", "e1", "entity_id"),
        ("-p1", "e1", "entity_id"),
        ("p1", "e1?x=1", "event_id"),
        ("p1", "e#1", "event_id"),
        ("bett-ü", "e1", "entity_id"),
        ("p1", "e%2F1", "event_id"),
    ],
)
async def test_an_id_outside_the_id_character_set_is_refused(
    entity: str, event: str, field: str
) -> None:
    result = await refused(Event(entity, event, NOW, {}), field)
    assert "letters, digits and . _ ~ : @ -" in result.message


async def test_every_character_of_the_id_set_is_accepted() -> None:
    await accepted(Event("Ward-3.bed_1~a:b@c", "0.e-1_x~y:z@w", NOW, {}))


async def test_an_id_longer_than_the_limit_is_refused() -> None:
    engine, _, _ = make(max_id_length=8)
    [result] = await engine.score([Event("p" * 9, "e1", NOW, {})])
    assert isinstance(result, InvalidInput) and result.field == "entity_id"
    assert "at most 8" in result.message


# -- the time window ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "t",
    [
        1e20,
        -1e12,
        3e11,
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() + 14 * HOUR,
        datetime(1, 1, 1, tzinfo=UTC).timestamp() - 14 * HOUR,
        NOW + 301,
        EVENT_TIME_MIN - 1,
    ],
)
async def test_a_time_outside_the_window_is_refused_naming_the_window(t: float) -> None:
    result = await refused(Event("p1", "e1", t, {}), "time")
    assert "1900-01-01T00:00:00Z" in result.message and "300 s" in result.message


@pytest.mark.parametrize("t", [EVENT_TIME_MIN, NOW + 300, NOW - 86_400])
async def test_the_ends_of_the_window_are_inside(t: float) -> None:
    await accepted(Event("p1", "e1", t, {}))


async def test_the_window_follows_the_settings() -> None:
    engine, _, _ = make(event_time_min=NOW - HOUR, event_time_max_ahead_s=0.0)
    results = await engine.score(
        [Event("p1", "e1", NOW - 2 * HOUR, {}), Event("p2", "e1", NOW + 1, {})]
    )
    assert [getattr(r, "field", None) for r in results] == ["time", "time"]
    assert isinstance((await engine.score([Event("p3", "e1", NOW, {})]))[0], Outcome)


async def test_dt_between_the_ends_of_the_window_is_finite_and_bounded() -> None:
    model = DtRecorder()
    engine, _, _ = make(model)
    for event in (Event("p1", "e1", EVENT_TIME_MIN, {}), Event("p1", "e2", NOW + 300, {})):
        [result] = await engine.score([event])
        assert isinstance(result, Outcome), result
    dt = model.dts[-1][0, 0]
    assert dt.dtype == np.float32 and math.isfinite(dt)
    assert dt == pytest.approx((NOW + 300 - EVENT_TIME_MIN) / HOUR, rel=1e-6)
    assert dt < 1.2e6  # hours: at most the width of the window, ~130 years


# -- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1e308, -1e308, 3.5e38, -3.41e38])
async def test_a_value_beyond_float32_is_refused(value: float) -> None:
    result = await refused(Event("p1", "e1", NOW, {"a": value}), "values.a")
    assert "32-bit" in result.message


@pytest.mark.parametrize("value", [FLOAT32_MAX, -FLOAT32_MAX])
async def test_the_largest_float32_is_accepted_without_a_declared_range(value: float) -> None:
    with np.errstate(over="ignore"):  # the fake model's sigmoid saturates
        await accepted(Event("p1", "e1", NOW, {"a": value}))


@pytest.mark.parametrize("value", [-0.01, 50.5, 1e9])
async def test_a_value_outside_the_manifest_range_is_refused_naming_it(value: float) -> None:
    result = await refused(
        Event("p1", "e1", NOW, {"a": value, "b": 1.0}), "values.a", RangedModel()
    )
    assert "[0, 50] mg/dL" in result.message


@pytest.mark.parametrize("value", [0.0, 50.0, 12.5, None])
async def test_a_value_inside_the_manifest_range_is_accepted(value: float | None) -> None:
    await accepted(Event("p1", "e1", NOW, {"a": value, "b": 1e6}), RangedModel())


async def test_a_refused_event_in_a_batch_leaves_the_others_scored() -> None:
    engine, _, store = make(RangedModel())
    results = await engine.score(
        [Event("p1", "e1", NOW, {"a": 99.0}), Event("p2", "e1", NOW, {"a": 9.0})]
    )
    assert isinstance(results[0], InvalidInput) and isinstance(results[1], Outcome)
    assert set(store.states) == {"p2"}


# -- the manifest's ranges ------------------------------------------------------------------


def write_manifest(folder: Path, feature: dict[str, object]) -> Path:
    document = {
        "name": "m",
        "version": "1",
        "features": [feature],
        "outputs": [{"name": "risk"}],
        "states": [{"name": "h", "shape": [1, 2]}],
    }
    (folder / "manifest.json").write_text(json.dumps(document))
    return folder


@pytest.mark.parametrize(
    "bad", [[5, 5], [6, 5], [0, "Infinity"], ["-Infinity", 0], ["NaN", 1], [1], [0, 1, 2], "low"]
)
def test_a_manifest_range_must_be_finite_low_below_high(tmp_path: Path, bad: object) -> None:
    text = json.dumps({"name": "HR", "range": bad}).replace('"Infinity"', "Infinity")
    text = text.replace('"-Infinity"', "-Infinity").replace('"NaN"', "NaN")
    write_manifest(tmp_path, json.loads(text))
    with pytest.raises(ModelContractError, match="range"):
        load_manifest(tmp_path)


def test_a_manifest_range_is_optional_and_shown_with_the_manifest(tmp_path: Path) -> None:
    manifest = load_manifest(write_manifest(tmp_path, {"name": "HR", "range": [0, 400]}))
    assert manifest.features[0].range == (0.0, 400.0)
    assert manifest.as_document()["features"][0]["range"] == [0.0, 400.0]
    assert load_manifest(write_manifest(tmp_path, {"name": "HR"})).features[0].range is None
