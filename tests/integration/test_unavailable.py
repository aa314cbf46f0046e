"""Redis going away: 503 with Retry-After and a readiness check naming it, never a 500."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import redis
from riskstream.adapters.embedded_redis import EmbeddedRedis
from riskstream.bootstrap import create_app
from riskstream.settings import Settings
from sqlalchemy.engine import make_url

from tests.support.database import OwnDatabase, make_sqlite_unreachable
from tests.support.processes import RedisServer


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
            assert "riskstream_ready 1.0" in (await client.get("/metrics")).text
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
            # the scrape still answers, and says this process cannot score (for alerting)
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200 and "riskstream_ready 0.0" in metrics.text
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
            make_sqlite_unreachable(db_file)
            await app.state.services.score_log.dispose()

            body = {"event_id": "e1", "time": "2026-11-25T08:00:00Z", "values": {"HR": 80}}
            assert (await client.post("/v1/entities/p1/events", json=body)).status_code == 200
            history = await client.get("/v1/entities/p1/scores")
            assert history.status_code == 503 and "retry-after" in history.headers
            assert history.json()["error"]["field"] == "database"
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["error"]["field"] == "database"


async def test_503_names_the_dependency_never_its_address(
    settings: Settings, own_database: OwnDatabase, own_redis: RedisServer
) -> None:
    """Redis gone, and then the database made unreachable: every 503 says which dependency is
    away, and nothing in the body tells a client where it runs. (Startup waits for Redis, so
    the service starts on a Redis of its own that then stops.)"""
    redis_port = own_redis.port
    own = settings.model_copy(update={"redis_url": own_redis.url, "database_url": own_database.url})
    database = make_url(own_database.url)
    where = [str(p) for p in (database.host, database.port, database.database) if p]
    app = create_app(own)
    async with app.router.lifespan_context(app):
        own_redis.stop()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rs") as client:
            body = {"event_id": "e1", "time": "2026-11-25T08:00:00Z", "values": {"HR": 80}}
            answers = [
                await client.post("/v1/entities/p1/events", json=body),
                await client.post("/v1/events", json=[{**body, "entity_id": "p1"}]),
                await client.get("/v1/entities/p1/risk"),
                await client.get("/v1/watchlist"),
                await client.get("/readyz"),
            ]
            for response in answers:
                assert response.status_code in (200, 503), response.text
                assert "127.0.0.1" not in response.text and str(redis_port) not in response.text
            assert "Redis is unreachable" in answers[0].json()["error"]["message"]
            assert answers[-1].status_code == 503

            # the database next: unreachable, and the connections opened before closed
            own_database.stop()
            await app.state.services.score_log.dispose()
            for path in ("/v1/entities/p1/scores", "/readyz"):
                response = await client.get(path)
                assert response.status_code == 503, response.text
                assert not [w for w in where if w in response.text], response.text
            history = await client.get("/v1/entities/p1/scores")
            assert history.json()["error"]["message"] == "the database is unreachable"
