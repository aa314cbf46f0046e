"""The HTTP API against a real Redis, a real SQL database and a real ONNX model."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
from riskstream.adapters.onnx_model import OnnxRiskModel

from tests.support.service import Running, wait_logged

T0 = "2026-11-25T08:00:00Z"


def entity() -> str:
    return f"patient-{uuid.uuid4().hex[:10]}"


def hourly(i: int) -> str:
    return f"2026-11-25T{8 + i // 60:02d}:{i % 60:02d}:00Z"


async def post(service: Running, entity_id: str, body: dict[str, Any]) -> Any:
    return await service.client.post(f"/v1/entities/{entity_id}/events", json=body)


async def test_an_event_is_scored_logged_and_readable(service: Running) -> None:
    e = entity()
    response = await post(service, e, {"event_id": "e1", "time": T0, "values": {"HR": 90}})
    assert response.status_code == 200, response.text
    body = response.json()
    manifest = service.services.model.manifest
    assert body["entity_id"] == e and body["event_id"] == "e1" and body["step"] == 1
    assert body["time"] == T0 and body["duplicate"] is False
    assert body["model"] == {"name": manifest.name, "version": manifest.version}
    assert set(body["risk"]) == set(manifest.output_names)
    assert all(0.0 <= p <= 1.0 for p in body["risk"].values())

    latest = (await service.client.get(f"/v1/entities/{e}/risk")).json()
    assert latest["step"] == 1 and latest["risk"] == body["risk"]

    logged = await wait_logged(service.services.score_log, e, 1)
    assert [(s.event_id, s.step) for s in logged] == [("e1", 1)]
    history = (await service.client.get(f"/v1/entities/{e}/scores")).json()
    assert [s["risk"] for s in history["scores"]] == [body["risk"]]
    assert history["next_after_step"] is None


async def test_a_stream_matches_the_model_run_offline(
    service: Running, tiny_model_dir, redis_client, key_prefix: str
) -> None:
    rng = np.random.default_rng(7)
    features = service.services.model.manifest.feature_names
    n = 30
    values = rng.normal(50, 20, size=(n, len(features))).astype(np.float32)
    values[rng.random(values.shape) < 0.7] = np.nan
    low, high = zip(*(f.range or (-1e9, 1e9) for f in service.services.model.manifest.features))
    values = np.clip(values, low, high).astype(np.float32)  # inside the plausible ranges
    gaps = rng.integers(0, 180, size=n)  # minutes between events, 0 included
    minutes = np.cumsum(gaps) - gaps[0]

    e = entity()
    served = []
    for i in range(n):
        body = {
            "event_id": f"e{i}",
            "time": 1_790_000_000 + int(minutes[i]) * 60,
            "values": {f: (None if np.isnan(v) else float(v)) for f, v in zip(features, values[i])},
        }
        response = await post(service, e, body)
        assert response.status_code == 200, response.text
        served.append(
            [response.json()["risk"][o] for o in service.services.model.manifest.output_names]
        )

    offline = OnnxRiskModel(tiny_model_dir)
    states = {
        s.name: np.zeros((s.shape[0], 1, s.shape[1]), np.float32) for s in offline.manifest.states
    }
    expected = []
    for i in range(n):
        dt = np.array([[0.0 if i == 0 else (minutes[i] - minutes[i - 1]) / 60]], np.float32)
        risk, states = offline.step(values[i : i + 1], dt, states)
        expected.append(risk[0])
    np.testing.assert_allclose(np.array(served), np.array(expected), atol=1e-5, rtol=0)
    # the state kept in Redis (stored sparse: most of the feature memory is zeros) is bit-exact
    stored = await service.services.store.get(e)
    assert stored is not None
    for name, tensor in states.items():
        assert stored.tensors[name].tobytes() == tensor[:, 0, :].tobytes(), name
    raw = await redis_client.hget(f"{key_prefix}:s:{e}", "x")
    assert raw is not None and len(raw) < 4 * sum(t.size for t in states.values())


async def test_a_duplicate_returns_the_same_answer_and_does_not_advance(service: Running) -> None:
    e = entity()
    first = (await post(service, e, {"event_id": "e1", "time": T0, "values": {"HR": 80}})).json()
    await post(service, e, {"event_id": "e2", "time": hourly(1), "values": {"HR": 85}})
    again = await post(service, e, {"event_id": "e1", "time": T0, "values": {"HR": 80}})
    assert again.status_code == 200
    assert again.json() == {**first, "duplicate": True}
    assert (await service.client.get(f"/v1/entities/{e}/risk")).json()["step"] == 2
    logged = await wait_logged(service.services.score_log, e, 2)
    assert len(logged) == 2


async def test_an_out_of_order_event_gets_409_naming_both_times(service: Running) -> None:
    e = entity()
    await post(service, e, {"event_id": "e1", "time": hourly(60), "values": {}})
    response = await post(service, e, {"event_id": "e2", "time": T0, "values": {}})
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "out_of_order" and error["field"] == "time"
    assert T0 in error["message"] and "2026-11-25T09:00:00Z" in error["message"]
    assert (await service.client.get(f"/v1/entities/{e}/risk")).json()["step"] == 1


BAD_BODIES: list[tuple[str, Any, int, str]] = [
    ("unknown feature", {"event_id": "e", "time": T0, "values": {"Heart": 1}}, 422, "values.Heart"),
    ("string value", {"event_id": "e", "time": T0, "values": {"HR": "high"}}, 422, "values.HR"),
    ("boolean value", {"event_id": "e", "time": T0, "values": {"HR": True}}, 422, "values.HR"),
    ("missing time", {"event_id": "e", "values": {}}, 422, "time"),
    ("unparseable time", {"event_id": "e", "time": "yesterday", "values": {}}, 422, "time"),
    (
        "time without offset",
        {"event_id": "e", "time": "2026-11-25T08:00:00", "values": {}},
        422,
        "time",
    ),
    ("empty event id", {"event_id": "", "time": T0, "values": {}}, 422, "event_id"),
    ("long event id", {"event_id": "x" * 129, "time": T0, "values": {}}, 422, "event_id"),
    ("missing event id", {"time": T0, "values": {}}, 422, "event_id"),
    ("extra field", {"event_id": "e", "time": T0, "values": {}, "colour": 1}, 422, "colour"),
    ("not an object", [1, 2], 422, "body"),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "field"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES]
)
async def test_bad_input_gets_a_4xx_naming_the_field_and_stores_nothing(
    service: Running, case: str, body: Any, status: int, field: str
) -> None:
    e = entity()
    response = await post(service, e, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status and error["field"] == field and error["message"]
    await assert_nothing_stored(service, e)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"event_id": "e", "time": "2026-11-25T08:00:00Z", "values": {"HR": NaN}}', "values.HR"),
        (
            b'{"event_id": "e", "time": "2026-11-25T08:00:00Z", "values": {"HR": Infinity}}',
            "values.HR",
        ),
        (b'{"event_id": "e", "time": 1e999, "values": {}}', "time"),
        (b'{"event_id": "e", "time": ', "body"),
    ],
)
async def test_non_finite_numbers_and_broken_json_are_refused(
    service: Running, raw: bytes, field: str
) -> None:
    e = entity()
    response = await service.client.post(
        f"/v1/entities/{e}/events", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    await assert_nothing_stored(service, e)


async def test_long_entity_ids_and_oversized_bodies_are_refused(service: Running) -> None:
    long_id = "p" * 129
    response = await post(service, long_id, {"event_id": "e", "time": T0, "values": {}})
    assert response.status_code == 422 and response.json()["error"]["field"] == "entity_id"
    await assert_nothing_stored(service, long_id)

    e = entity()
    huge = {"event_id": "e", "time": T0, "values": {"HR": 1}, "pad": "x" * 2_000_000}
    response = await post(service, e, huge)
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    await assert_nothing_stored(service, e)


async def assert_nothing_stored(service: Running, entity_id: str) -> None:
    assert (await service.client.get(f"/v1/entities/{entity_id}/risk")).status_code == 404
    assert (
        await service.services.score_log.history(entity_id, since=None, after_step=None, limit=10)
        == []
    )


async def test_forget_drops_the_state_but_keeps_the_log(service: Running) -> None:
    e = entity()
    await post(service, e, {"event_id": "e1", "time": T0, "values": {"HR": 70}})
    response = await service.client.delete(f"/v1/entities/{e}")
    assert response.status_code == 200 and response.json() == {"entity_id": e, "forgotten": True}
    missing = await service.client.get(f"/v1/entities/{e}/risk")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_entity"
    assert (await service.client.delete(f"/v1/entities/{e}")).status_code == 404
    assert len(await wait_logged(service.services.score_log, e, 1)) == 1
    again = await post(service, e, {"event_id": "e2", "time": T0, "values": {}})
    assert again.json()["step"] == 1  # a new stay starts afresh


async def test_score_history_pages_and_filters(service: Running) -> None:
    e = entity()
    for i in range(7):
        await post(service, e, {"event_id": f"e{i}", "time": hourly(60 * i), "values": {}})
    await wait_logged(service.services.score_log, e, 7)
    page = (await service.client.get(f"/v1/entities/{e}/scores", params={"limit": 3})).json()
    assert [s["step"] for s in page["scores"]] == [1, 2, 3] and page["next_after_step"] == 3
    page = (
        await service.client.get(f"/v1/entities/{e}/scores", params={"limit": 3, "after_step": 6})
    ).json()
    assert [s["step"] for s in page["scores"]] == [7] and page["next_after_step"] is None
    since = (
        await service.client.get(f"/v1/entities/{e}/scores", params={"since": hourly(300)})
    ).json()
    assert [s["event_id"] for s in since["scores"]] == ["e5", "e6"]
    bad = await service.client.get(f"/v1/entities/{e}/scores", params={"limit": 0})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "limit"


async def test_model_health_and_readiness(service: Running) -> None:
    model = (await service.client.get("/v1/model")).json()
    assert model["name"] == service.services.model.manifest.name
    assert [f["name"] for f in model["features"]] == list(
        service.services.model.manifest.feature_names
    )
    assert (await service.client.get("/healthz")).json() == {"status": "alive"}
    ready = await service.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok"
    assert (await service.client.get("/openapi.json")).json()["info"]["title"] == "riskstream"
    missing = await service.client.get("/v1/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
