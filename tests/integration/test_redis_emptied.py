"""An external Redis that restarts empty (no persistence, or a failover to an empty replica):
scores answered after it still reach SQL, and readiness, the log and a metric say it happened."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from riskstream.adapters.redis_outbox import RedisOutbox
from riskstream.bootstrap import create_app
from riskstream.settings import Settings

from tests.support.server import free_port
from tests.support.service import wait_logged


class OwnRedis:
    """A redis-server of this test's own, without persistence, so a restart empties it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.process = subprocess.Popen(
            [*command, "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(200):
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                assert self.process.poll() is None, "redis-server exited"
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(20)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


async def post(client: httpx.AsyncClient, entity: str, event: str, hour: int) -> httpx.Response:
    body = {"event_id": event, "time": f"2026-11-25T{hour:02d}:00:00Z", "values": {"HR": 80}}
    for _ in range(100):  # the first requests after the restart may find broken connections
        response = await client.post(f"/v1/entities/{entity}/events", json=body)
        if response.status_code != 503:
            return response
        await asyncio.sleep(0.1)
    return response


async def test_redis_restarted_empty_nothing_stuck_and_readiness_says_so(
    settings: Settings, own_redis: OwnRedis
) -> None:
    """Before: the drainer failed with NOGROUP forever and /readyz said 200 "ready"."""
    app = create_app(settings.model_copy(update={"redis_url": own_redis.url}))
    async with app.router.lifespan_context(app):
        log = app.state.services.score_log
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rs") as client:
            for hour in range(3):
                assert (await post(client, "before", f"e{hour}", hour)).status_code == 200
            assert len(await wait_logged(log, "before", 3)) == 3
            ready = (await client.get("/readyz")).json()
            assert ready["status"] == "ready" and ready["warnings"] == []

            own_redis.stop()
            own_redis.start()  # empty: no snapshot, no append-only file

            for hour in range(5):
                response = await post(client, "after", f"e{hour}", hour)
                assert response.status_code == 200, response.text
            assert len(await wait_logged(log, "after", 5)) == 5

            ready_response = await client.get("/readyz")
            assert ready_response.status_code == 200, ready_response.text
            ready = ready_response.json()
            assert ready["status"] == "degraded" and ready["checks"]["redis"] == "ok"
            (warning,) = ready["warnings"]
            assert warning["field"] == "redis" and "emptied" in warning["message"]
            metrics = (await client.get("/metrics")).text
            assert "riskstream_redis_emptied_total 1.0" in metrics

            # the marker is set again: found once, not on every check
            await app.state.services.drainer.check_redis()
            assert "riskstream_redis_emptied_total 1.0" in (await client.get("/metrics")).text


async def test_each_process_finds_an_emptying_once(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """Two processes share the marker: the first sets it, the other adopts it; once it is gone,
    each finds that once, and they agree on the new marker."""
    one, two = (RedisOutbox(redis_client, prefix=key_prefix, claim_idle_ms=5_000) for _ in "12")
    assert await one.intact() and await two.intact()
    assert await one.intact() and await two.intact()
    await redis_client.delete(f"{key_prefix}:instance")
    assert not await two.intact()
    assert not await one.intact()
    assert await one.intact() and await two.intact()
