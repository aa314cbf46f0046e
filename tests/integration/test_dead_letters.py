"""Records the database refuses, next to valid ones, in the real outbox: the valid ones land,
the bad ones wait in the dead-letter stream, and readiness and the metrics say so."""

from __future__ import annotations

import asyncio

import httpx
import redis.asyncio as aioredis
from riskstream.adapters.codec import encode_logged
from riskstream.adapters.sql.score_log import SqlScoreLog
from riskstream.bootstrap import create_app
from riskstream.core.domain import LoggedScore, Score
from riskstream.settings import Settings
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.database import OwnDatabase
from tests.support.service import Running, wait_logged


def logged(entity: str, n: int, *, time: float = 1.8e9) -> LoggedScore:
    score = Score(
        f"{entity[:20]}-{n}", entity, f"e{n}", n, time + n, 1.8e9, "tiny", "0.1.0", {"aki": 0.5}
    )
    return LoggedScore(score, {"HR": 80.0 + n})


# What the database (or its driver) refuses: a time no SQL timestamp holds. On PostgreSQL an
# entity id longer than its column is refused too; SQLite does not check lengths.
BAD_TIME = logged("dl-time", 3, time=1e20)
LONG_ID = logged("dl-" + "x" * 300, 4)


async def put(client: aioredis.Redis, prefix: str, *payloads: bytes) -> None:
    """Straight into the outbox stream, all at once (so the drain claims them together)."""
    pipe = client.pipeline(transaction=True)
    for payload in payloads:
        pipe.xadd(f"{prefix}:outbox", {"d": payload})
    await pipe.execute()


async def wait_dead_letters(client: aioredis.Redis, prefix: str, count: int) -> list:
    for _ in range(400):
        letters = await client.xrange(f"{prefix}:deadletter")
        if len(letters) >= count:
            return letters
        await asyncio.sleep(0.05)
    return letters


async def test_refused_records_go_to_the_dead_letters_and_the_valid_ones_land(
    service: Running,
    redis_client: aioredis.Redis,
    key_prefix: str,
    score_log: SqlScoreLog,
    sql_engine: AsyncEngine,
) -> None:
    """Before: the batch holding a refused record was retried forever; none of it reached SQL."""
    postgres = sql_engine.dialect.name == "postgresql"
    valid = [logged("dl-ok", n) for n in range(1, 6)]
    bad = [encode_logged(BAD_TIME), b'{"not": "a score"}', encode_logged(LONG_ID)]
    encoded = [encode_logged(v) for v in valid]
    await put(redis_client, key_prefix, *encoded[:2], *bad, *encoded[2:])

    assert len(await wait_logged(score_log, "dl-ok", 5)) == 5
    expected = 3 if postgres else 2
    letters = await wait_dead_letters(redis_client, key_prefix, expected)
    assert len(letters) == expected
    fields = [{k.decode(): v for k, v in f.items()} for _, f in letters]
    by_payload = {f["d"]: f for f in fields}
    assert set(by_payload) == set(bad if postgres else bad[:2])
    assert by_payload[bad[0]]["e"] == b"dl-time" and by_payload[bad[0]]["ev"] == b"e3"
    assert by_payload[bad[1]]["e"] == b"" and b"undecodable" in by_payload[bad[1]]["error"]
    assert all(f["error"] and f["id"] and float(f["at"]) > 1.7e9 for f in fields)
    assert b"80." not in b"".join(f["error"] for f in fields)  # no event values in the error
    assert await redis_client.xlen(f"{key_prefix}:outbox") == 0

    ready = await service.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "degraded" and body["checks"]["redis"] == "ok"
    (warning,) = body["warnings"]
    assert warning["field"] == "deadletter" and warning["message"].startswith(f"{expected} dead")
    metrics = (await service.client.get("/metrics")).text
    assert f"riskstream_dead_letters_total {expected}.0" in metrics
    await service.services.drainer.check_redis()
    metrics = (await service.client.get("/metrics")).text
    assert f"riskstream_dead_letters_waiting {expected}.0" in metrics


async def test_a_database_that_is_down_sets_nothing_aside(
    settings: Settings, own_database: OwnDatabase, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """Unreachable is not refused: the outbox holds the scores and the drain retries."""
    app = create_app(settings.model_copy(update={"database_url": own_database.url}))
    async with app.router.lifespan_context(app) as state:
        services = state["services"]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rs") as client:
            own_database.stop()
            await services.score_log.dispose()
            try:
                for n in range(2):
                    body = {
                        "event_id": f"e{n}",
                        "time": f"2026-11-25T0{n}:00:00Z",
                        "values": {"HR": 80},
                    }
                    response = await client.post("/v1/entities/down/events", json=body)
                    assert response.status_code == 200, response.text
                for _ in range(400):  # until the drain has failed for a while
                    if services.drainer.stalled_s() > 1.5:
                        break
                    await asyncio.sleep(0.05)
                assert services.drainer.stalled_s() > 1.5
                assert await redis_client.xlen(f"{key_prefix}:outbox") == 2
            finally:
                own_database.start()
            await services.score_log.dispose()  # none may reach a file set aside meanwhile
            assert len(await wait_logged(services.score_log, "down", 2)) == 2
            assert await redis_client.xlen(f"{key_prefix}:deadletter") == 0
