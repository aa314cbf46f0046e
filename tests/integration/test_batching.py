"""Micro-batching keeps exactly-once and per-entity order, and the metrics show it batching."""

from __future__ import annotations

import asyncio
import re

import numpy as np
from riskstream.adapters.onnx_model import OnnxRiskModel

from tests.support.service import Running, wait_logged

T0 = 1_790_000_000


def values(
    rng: np.random.Generator, features: tuple[str, ...], ranges: dict[str, tuple[float, float]]
) -> dict[str, float | None]:
    """About 50, moved inside the feature's plausible range where it declares one."""
    drawn = {f: (float(rng.normal(50, 10)) if rng.random() < 0.3 else None) for f in features}
    return {
        f: v if v is None or f not in ranges else min(max(v, ranges[f][0]), ranges[f][1])
        for f, v in drawn.items()
    }


async def test_singles_and_bulks_interleaved_step_each_entity_once_in_order(
    service: Running, key_prefix: str
) -> None:
    model = service.services.model
    features, outputs = model.manifest.feature_names, model.manifest.output_names
    ranges = {f.name: f.range for f in model.manifest.features if f.range is not None}
    rng = np.random.default_rng(3)
    entities = [f"{key_prefix}-e{i}" for i in range(24)]
    n = 12
    streams = {
        e: [
            {"event_id": f"ev{k}", "time": T0 + 3600 * k, "values": values(rng, features, ranges)}
            for k in range(n)
        ]
        for e in entities
    }
    served: dict[str, list[list[float]]] = {e: [] for e in entities}

    async def send(entity: str, i: int) -> None:
        events = streams[entity]
        k = 0
        while k < n:
            if (k + i) % 3 == 0 and k + 3 <= n:  # a bulk of three, this entity and a neighbour's
                batch = [{"entity_id": entity, **ev} for ev in events[k : k + 3]]
                r = await service.client.post("/v1/events", json=batch)
                assert r.status_code == 200, r.text
                results = r.json()["results"]
                assert [x["status"] for x in results] == [200] * 3
                served[entity] += [[x["risk"][o] for o in outputs] for x in results]
                assert [x["step"] for x in results] == [k + 1, k + 2, k + 3]
                k += 3
            else:
                r = await service.client.post(f"/v1/entities/{entity}/events", json=events[k])
                assert r.status_code == 200, r.text
                assert r.json()["step"] == k + 1
                served[entity].append([r.json()["risk"][o] for o in outputs])
                k += 1

    await asyncio.gather(*(send(e, i) for i, e in enumerate(entities)))

    offline = OnnxRiskModel(model.model_dir)
    states = {
        s.name: np.zeros((s.shape[0], len(entities), s.shape[1]), np.float32)
        for s in offline.manifest.states
    }
    for k in range(n):
        x = np.array(
            [
                [
                    np.nan if streams[e][k]["values"][f] is None else streams[e][k]["values"][f]
                    for f in features
                ]
                for e in entities
            ],
            np.float32,
        )
        dt = np.full((len(entities), 1), 0.0 if k == 0 else 1.0, np.float32)
        risk, states = offline.step(x, dt, states)
        for b, e in enumerate(entities):
            np.testing.assert_allclose(served[e][k], risk[b], atol=1e-5, rtol=0)

    for e in entities:
        logged = await wait_logged(service.services.score_log, e, n)
        assert [s.event_id for s in logged] == [f"ev{k}" for k in range(n)]

    text = (await service.client.get("/metrics")).text
    count = float(re.search(r"^riskstream_batch_size_count (\S+)$", text, re.M).group(1))
    total = float(re.search(r"^riskstream_batch_size_sum (\S+)$", text, re.M).group(1))
    assert total == len(entities) * n  # every event went through the model exactly once
    assert count < total  # and some model calls carried several events


async def test_bulk_reports_per_event_errors_and_applies_time_order(service: Running) -> None:
    body = [
        {"entity_id": "bulk-a", "event_id": "2", "time": T0 + 7200, "values": {"HR": 90}},
        {"entity_id": "bulk-a", "event_id": "1", "time": T0, "values": {"HR": 80}},
        {"entity_id": "bulk-b", "event_id": "1", "time": T0, "values": {"Nope": 1}},
        {"entity_id": "bulk-b", "event_id": "2", "time": "not a time", "values": {}},
        {"entity_id": "bulk-a", "event_id": "1", "time": T0, "values": {"HR": 80}},
    ]
    r = await service.client.post("/v1/events", json=body)
    assert r.status_code == 200
    out = r.json()
    assert out["accepted"] == 3 and out["rejected"] == 2
    res = out["results"]
    assert [x["status"] for x in res] == [200, 200, 422, 422, 200]
    assert res[1]["step"] == 1 and res[0]["step"] == 2  # applied in time order
    assert res[4]["duplicate"] is True and res[4]["step"] == 1
    assert res[2]["error"]["field"] == "values.Nope" and res[3]["error"]["field"] == "time"

    ndjson = "\n".join(
        f'{{"entity_id": "bulk-c", "event_id": "{i}", "time": {T0 + i}, "values": {{}}}}'
        for i in range(3)
    )
    r = await service.client.post(
        "/v1/events", content=ndjson, headers={"content-type": "application/x-ndjson"}
    )
    assert [x["step"] for x in r.json()["results"]] == [1, 2, 3]
    too_many = [body[0]] * (service.services.settings.max_bulk_events + 1)
    r = await service.client.post("/v1/events", json=too_many)
    assert r.status_code == 413 and r.json()["error"]["field"] == "body"


async def test_metrics_expose_the_series_operators_need(service: Running) -> None:
    ev = {"event_id": "e1", "time": T0, "values": {"HR": 80}}
    await service.client.post("/v1/entities/m1/events", json=ev)
    await service.client.post("/v1/entities/m1/events", json=ev)  # duplicate
    await service.client.post("/v1/entities/m1/events", json={**ev, "event_id": "e0", "time": 0})
    await wait_logged(service.services.score_log, "m1", 1)
    text = (await service.client.get("/metrics")).text
    for series in (
        'riskstream_http_request_duration_seconds_bucket{le="0.005",method="POST",'
        'route="/v1/entities/{entity_id}/events",status="200"}',
        "riskstream_model_step_seconds_count",
        "riskstream_batch_size_bucket",
        "riskstream_queue_wait_seconds_count",
        "riskstream_cas_conflicts_total",
        'riskstream_events_total{outcome="scored"} 1.0',
        'riskstream_events_total{outcome="duplicate"} 1.0',
        'riskstream_events_total{outcome="late"} 1.0',
        "riskstream_outbox_backlog",
        'riskstream_redis_seconds_count{op="commit"}',
        'riskstream_sql_seconds_count{op="append"}',
    ):
        assert series in text, series
