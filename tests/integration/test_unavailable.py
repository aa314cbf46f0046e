"""Redis going away: 503 with Retry-After and a readiness check naming it, never a 500."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import redis

from app.adapters.embedded_redis import EmbeddedRedis
from app.bootstrap import create_app
from app.settings import Settings


async def test_redis_down_gives_503_with_retry_after(settings: Settings, tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path / "own-redis")
    url = embedded.start()
    own = settings.model_copy(update={"redis_url": url})
    app = create_app(own)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rs") as client:
            body = {"event_id": "e1", "time": "2026-11-25T08:00:00Z", "values": {"HR": 80}}
            assert (await client.post("/v1/entities/p1/events", json=body)).status_code == 200
            with contextlib.suppress(redis.exceptions.ConnectionError):
                redis.Redis.from_url(url).shutdown(nosave=True)

            response = await client.post("/v1/entities/p1/events", json={**body, "event_id": "e2"})
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == str(own.retry_after_seconds)
            assert response.json()["error"]["code"] == "unavailable"
            assert response.json()["error"]["field"] == "redis"

            risk = await client.get("/v1/entities/p1/risk")
            assert risk.status_code == 503 and "retry-after" in risk.headers

            ready = await client.get("/readyz")
            assert ready.status_code == 503
            error = ready.json()["error"]
            assert error["code"] == "not_ready" and error["field"] == "redis"
            assert "redis" in error["message"] and "database" not in error["message"]
            assert (await client.get("/healthz")).status_code == 200
    embedded.stop()


async def test_database_down_gives_503_and_scoring_goes_on(
    settings: Settings, tmp_path: Path
) -> None:
    """The score log is behind the outbox: events are still scored while SQL is away."""
    db_file = tmp_path / "own.sqlite3"
    own = settings.model_copy(update={"database_url": f"sqlite:///{db_file}"})
    app = create_app(own)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rs") as client:
            db_file.unlink()
            db_file.mkdir()  # a folder where the database file was: SQLite cannot open it
            await app.state.services.score_log._engine.dispose()

            body = {"event_id": "e1", "time": "2026-11-25T08:00:00Z", "values": {"HR": 80}}
            assert (await client.post("/v1/entities/p1/events", json=body)).status_code == 200
            history = await client.get("/v1/entities/p1/scores")
            assert history.status_code == 503 and "retry-after" in history.headers
            assert history.json()["error"]["field"] == "database"
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["error"]["field"] == "database"
