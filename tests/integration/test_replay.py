"""Replay from the event log, lazy rehydration and STATE_TTL, on a real Redis, a real SQL
database and the real ONNX test model.

Bit for bit needs the same batch shapes: onnxruntime's CPU kernels round a row differently
with the batch it runs in (docs/performance.md, "Replay"). The live events here are posted one
at a time (batches of one), so a replay one entity per model call must give the very bits;
a replay batched across entities gives the same states to float32 rounding (1e-5 asked).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import redis.asyncio as aioredis
from riskstream.bootstrap import create_app, thresholds
from riskstream.core.domain import EntityState, Score
from riskstream.core.replay import Replayer
from riskstream.services import Services
from riskstream.settings import Settings

from tests.support.paths import PROJECT_ROOT
from tests.support.redis import delete_keys
from tests.support.service import Running, wait_logged

HOUR = 3600
T0 = 1_795_597_200  # 2026-11-25T09:00:00Z


def uid() -> str:
    return uuid.uuid4().hex[:10]


def event(k: int, salt: int = 0) -> dict[str, Any]:
    """The k-th event of an entity: hourly, a few vitals and now and then a lab."""
    values: dict[str, float | None] = {"HR": 70 + (7 * k + salt) % 40, "Temp": 36.5 + k % 3 / 2}
    if k % 3 == 0:
        values["Creatinine"] = 0.8 + (k + salt) % 5 / 4
    if k % 4 == 1:
        values["MAP"] = None
    return {"event_id": f"e{k}", "time": T0 + k * HOUR + salt, "values": values}


async def post(client: httpx.AsyncClient, entity: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/v1/entities/{entity}/events", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def replayer(services: Services, batch: int = 16, max_rounds: int = 20) -> Replayer:
    settings = services.settings
    manifest = services.model.manifest
    return Replayer(
        services.model,
        services.score_log,
        thresholds=thresholds(settings, manifest.output_names),
        dedup_history=settings.dedup_history,
        batch=batch,
        max_rounds=max_rounds,
    )


def same_score(a: Score | None, b: Score | None) -> bool:
    """The log keeps times to the microsecond; everything else exactly."""
    if a is None or b is None:
        return a is b
    return replace(a, scored_at=0.0) == replace(b, scored_at=0.0) and a.scored_at == (
        pytest.approx(b.scored_at, abs=1e-6)
    )


def assert_same_state(
    replayed: EntityState | None, live: EntityState | None, *, exact: bool = True
) -> None:
    assert replayed is not None and live is not None
    assert (replayed.step, replayed.last_time, replayed.model_key) == (
        live.step,
        live.last_time,
        live.model_key,
    )
    assert same_score(replayed.latest, live.latest)
    assert same_score(replayed.previous, live.previous)
    assert replayed.alerts == live.alerts
    assert replayed.tensors.keys() == live.tensors.keys()
    for name, tensor in live.tensors.items():
        assert tensor.dtype == replayed.tensors[name].dtype
        if exact:
            assert tensor.tobytes() == replayed.tensors[name].tobytes(), name
        else:
            np.testing.assert_allclose(replayed.tensors[name], tensor, rtol=0, atol=1e-5)


async def fill(service: Running, entities: list[str], lengths: list[int]) -> None:
    """Entities of different lengths, their events interleaved, one request at a time."""
    for k in range(max(lengths)):
        for n, (entity, length) in enumerate(zip(entities, lengths)):
            if k < length:
                await post(service.client, entity, event(k, salt=n))
    for entity, length in zip(entities, lengths):
        assert len(await wait_logged(service.services.score_log, entity, length)) == length


async def test_the_replayed_state_equals_the_live_state_bit_for_bit(service: Running) -> None:
    u = uid()
    entities = [f"rp-{u}-{n}" for n in range(6)]
    await fill(service, entities, [9, 1, 5, 9, 3, 7])
    exact = await replayer(service.services, batch=1).rebuild(entities)
    batched = await replayer(service.services, batch=16).rebuild(entities)
    for entity in entities:
        live = await service.services.store.get(entity)
        assert_same_state(exact[entity].state, live)
        assert_same_state(batched[entity].state, live, exact=False)


async def test_redis_emptied_the_next_event_continues_the_history(
    service: Running, redis_url: str, key_prefix: str
) -> None:
    """Two entities get the same events; one's state is lost with everything in Redis (under
    this test's prefix), the other's is not. Their sixth events score the same."""
    u = uid()
    kept, lost = f"kept-{u}", f"lost-{u}"
    for k in range(5):
        for entity in (kept, lost):
            await post(service.client, entity, event(k))
    assert len(await wait_logged(service.services.score_log, lost, 5)) == 5
    control = await post(service.client, kept, event(5))

    delete_keys(redis_url, key_prefix)  # Redis emptied (only this test's keys: shared server)
    assert (await service.client.get(f"/v1/entities/{lost}/risk")).status_code == 404

    sixth = await post(service.client, lost, event(5))
    assert sixth["rehydrated"] is True and control["rehydrated"] is False
    assert sixth["step"] == 6 and not sixth["duplicate"]
    for output, p in control["risk"].items():
        assert sixth["risk"][output] == pytest.approx(p, abs=1e-5)
    latest = (await service.client.get(f"/v1/entities/{lost}/risk")).json()
    assert latest["step"] == 6 and latest["risk"] == sixth["risk"]

    # retries of logged events are still duplicates: the last (same time) and an earlier one
    again = await post(service.client, lost, event(5))
    assert again["duplicate"] and again["step"] == 6 and again["risk"] == sixth["risk"]
    earlier = await post(service.client, lost, event(2))
    assert earlier["duplicate"] and earlier["step"] == 3
    seventh = await post(service.client, lost, event(6))
    assert seventh["step"] == 7 and seventh["rehydrated"] is False
    logged = await wait_logged(service.services.score_log, lost, 7)
    assert [s.step for s in logged] == [1, 2, 3, 4, 5, 6, 7]


async def test_a_deleted_entity_starts_afresh_not_rehydrated(service: Running) -> None:
    e = f"gone-{uid()}"
    for k in range(3):
        await post(service.client, e, event(k))
    assert len(await wait_logged(service.services.score_log, e, 3)) == 3
    assert (await service.client.delete(f"/v1/entities/{e}")).status_code == 200
    first = await post(service.client, e, event(3))
    assert first["step"] == 1 and first["rehydrated"] is False


@pytest.fixture
def own_database(blank_database_url: str) -> str:
    from riskstream.adapters.sql.database import migrate

    migrate(blank_database_url)
    return blank_database_url


async def test_riskstream_replay_all_restores_every_entity(
    settings: Settings, own_database: str, redis_url: str, key_prefix: str
) -> None:
    """On a database of its own, so that --all means this test's entities."""
    own = settings.model_copy(update={"database_url": own_database})
    app = create_app(own)
    async with app.router.lifespan_context(app) as state:
        services: Services = state["services"]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rs") as client:
            running = Running(client, services, app)
            u = uid()
            entities = [f"all-{u}-{n}" for n in range(12)]
            await fill(running, entities, [4 + n % 5 for n in range(12)])
            live = {e: await services.store.get(e) for e in entities}

            delete_keys(redis_url, key_prefix)
            env = {
                **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATA_DIR")},
                "REDIS_URL": redis_url,
                "DATABASE_URL": own_database,
                "KEY_PREFIX": key_prefix,
                "MODEL_DIR": str(own.model_dir),
                "DATA_DIR": str(own.data_dir),
            }
            done = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "riskstream.cli",
                    "replay",
                    "--all",
                    "--batch",
                    "16",
                    "--threads",
                    "1",
                ],
                env=env,
                cwd=PROJECT_ROOT,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            report = orjson.loads(done.stdout.strip().splitlines()[-1])
            assert report["installed"] == report["entities"] == 12, report
            assert report["events"] == sum(4 + n % 5 for n in range(12))
            for e in entities:
                assert_same_state(await services.store.get(e), live[e], exact=False)
            watch = (await client.get("/v1/watchlist", params={"limit": 100})).json()
            assert {w["entity_id"] for w in watch["entities"]} >= set(entities)
            nxt = await post(client, entities[0], event(20))
            assert nxt["step"] == 5 and nxt["rehydrated"] is False


async def test_the_admin_replay_route(service: Running, redis_url: str, key_prefix: str) -> None:
    u = uid()
    entities = [f"adm-{u}-{n}" for n in range(3)]
    await fill(service, entities, [2, 3, 4])
    live = {e: await service.services.store.get(e) for e in entities}
    delete_keys(redis_url, key_prefix)
    body = {"entity_ids": [*entities, f"nobody-{u}"]}
    response = await service.client.post("/v1/admin/replay", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert (out["entities"], out["installed"], out["events"]) == (4, 3, 9)
    assert out["skipped"] == [{"entity_id": f"nobody-{u}", "reason": "no events in the log"}]
    for e in entities:
        assert_same_state(await service.services.store.get(e), live[e], exact=False)

    both = await service.client.post("/v1/admin/replay", json={"all": True, "entity_ids": []})
    assert both.status_code == 422 and both.json()["error"]["field"] == "entity_ids"
    other = await service.client.post(
        "/v1/admin/replay", json={"entity_ids": entities, "model": "aki-lstm/0.0.1"}
    )
    assert other.status_code == 422 and other.json()["error"]["field"] == "model"


async def test_state_ttl_expiry_then_rehydration_gives_the_same_risk(
    settings: Settings, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    app = create_app(settings.model_copy(update={"state_ttl": 1.0}))
    async with app.router.lifespan_context(app) as state:
        services: Services = state["services"]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rs") as client:
            u = uid()
            idle, busy = f"idle-{u}", f"busy-{u}"
            for k in range(4):
                await post(client, idle, event(k))
            assert await redis_client.pttl(f"{key_prefix}:s:{idle}") > 0
            assert len(await wait_logged(services.score_log, idle, 4)) == 4
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while await redis_client.exists(f"{key_prefix}:s:{idle}"):
                assert loop.time() < deadline, "the state did not expire"
                await asyncio.sleep(0.1)
            assert not await redis_client.exists(f"{key_prefix}:d:{idle}")
            watch = (await client.get("/v1/watchlist", params={"limit": 1000})).json()
            assert idle not in {w["entity_id"] for w in watch["entities"]}
            assert not await redis_client.zscore(
                f"{key_prefix}:w:{services.model.manifest.output_names[0]}", idle
            )

            back = await post(client, idle, event(4))
            busy_answers = [await post(client, busy, event(k)) for k in range(5)]
            assert back["rehydrated"] is True and back["step"] == 5
            assert busy_answers[-1]["step"] == 5 and busy_answers[-1]["rehydrated"] is False
            for output, p in busy_answers[-1]["risk"].items():
                assert back["risk"][output] == pytest.approx(p, abs=1e-5)


async def test_events_racing_a_replay_are_neither_lost_nor_applied_twice(
    service: Running,
) -> None:
    """Clients post events while replays of the same entities run back to back: every step
    is logged once, in order, and the state at the end is the one the log gives."""
    u = uid()
    entities = [f"race-{u}-{n}" for n in range(6)]
    await fill(service, entities, [3] * 6)
    rp = replayer(service.services, batch=8, max_rounds=2)
    store = service.services.store
    posting = True
    replays = writes = 0

    async def replay_loop() -> None:
        nonlocal replays, writes
        while posting:
            report = await rp.replay(entities, store)
            replays += 1
            writes += report.installed + report.conflicts

    async def clients() -> None:
        nonlocal posting
        try:
            for k in range(3, 23):
                await asyncio.gather(
                    *(post(service.client, e, event(k, n)) for n, e in enumerate(entities))
                )
        finally:
            posting = False

    await asyncio.gather(replay_loop(), clients())
    assert replays > 1 and writes > 0  # replays wrote (or lost a write) while events came
    for entity in entities:
        logged = await wait_logged(service.services.score_log, entity, 23)
        assert [s.step for s in logged] == list(range(1, 24)), entity
        assert [s.event_id for s in logged] == [f"e{k}" for k in range(23)]
    final = await replayer(service.services, batch=8).replay(entities, store)
    assert final.installed == len(entities)
    rebuilt = await rp.rebuild(entities)
    for entity in entities:
        assert_same_state(rebuilt[entity].state, await store.get(entity), exact=False)


@pytest.mark.parametrize("bad", [[], ["--all", "--entity", "x"], ["--all", "--model", "nope/1"]])
def test_the_cli_refuses_bad_arguments(bad: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "riskstream.cli", "replay", *bad],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "riskstream replay" in done.stderr
