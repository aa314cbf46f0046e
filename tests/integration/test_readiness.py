"""/readyz tells a drain that makes no progress while the database still answers (a lock held
on the score table): 200 "degraded" with an ``outbox`` warning, "ready" again once it drains."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator

import httpx
import psycopg
from riskstream.bootstrap import create_app
from riskstream.settings import Settings

from tests.support.service import wait_logged


@contextlib.contextmanager
def score_table_locked(database_url: str) -> Iterator[None]:
    """Another session holds the score table: inserts wait (PostgreSQL) or fail as locked
    (SQLite), while ``SELECT 1`` still answers."""
    if database_url.startswith("sqlite:///"):
        connection = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=1)
        connection.isolation_level = None
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    with psycopg.connect(database_url) as pg:
        pg.execute("LOCK TABLE scores IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            pg.rollback()


async def readiness(client: httpx.AsyncClient, status: str) -> dict:
    for _ in range(300):
        response = await client.get("/readyz")
        assert response.status_code == 200, response.text
        body: dict = response.json()
        if body["status"] == status:
            return body
        await asyncio.sleep(0.1)
    return body


async def test_readiness_reports_a_stalled_drain(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"outbox_stall_s": 1.0}))
    assert settings.database_url is not None
    async with app.router.lifespan_context(app):
        log = app.state.services.score_log
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rs") as client:
            body = {"event_id": "e0", "time": "2026-11-25T08:00:00Z", "values": {"HR": 80}}
            assert (await client.post("/v1/entities/st/events", json=body)).status_code == 200
            assert len(await wait_logged(log, "st", 1)) == 1
            assert (await readiness(client, "ready"))["status"] == "ready"

            with score_table_locked(settings.database_url):
                for n in range(1, 4):
                    event = {**body, "event_id": f"e{n}", "time": f"2026-11-25T{8 + n:02d}:00:00Z"}
                    response = await client.post("/v1/entities/st/events", json=event)
                    assert response.status_code == 200, response.text
                stalled = await readiness(client, "degraded")
                assert stalled["status"] == "degraded", stalled
                (warning,) = stalled["warnings"]
                assert warning["field"] == "outbox" and "stalled" in warning["message"]

            assert len(await wait_logged(log, "st", 4)) == 4
            assert (await readiness(client, "ready"))["status"] == "ready"
