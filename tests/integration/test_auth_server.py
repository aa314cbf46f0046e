"""Access control against real server processes (``riskstream serve``): every route's key and
scope, the open routes, revocation and the rate limit across two workers, the SSE caps, CORS,
415 for text/plain, the audit columns and table, and a log free of secrets and values."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from riskstream.adapters.sql.tables import api_keys, deletions, events, scores
from riskstream.core.keys import key_id_of
from riskstream.settings import Settings
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.test_auth_paths import UNKNOWN, bearer, make_key
from tests.support.paths import PROJECT_ROOT
from tests.support.server import ServerProcess
from tests.support.service import server_env

pytestmark = pytest.mark.slow
EVENT = {"event_id": "e1", "time": "2026-11-25T08:00:00Z", "values": {"HR": 93.8125}}
VALUE_TEXT = "93.8125"  # a feature value that must never reach the log


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth": True})


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def start(
    servers: list[ServerProcess], settings: Settings, log: Path, workers: int = 1, **env: str
) -> ServerProcess:
    server = ServerProcess(server_env(settings, **env), log, workers=workers)
    servers.append(server)
    return server


async def request(
    c: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], body: Any = None
) -> httpx.Response:
    if path.startswith("/v1/stream"):
        async with c.stream(method, path, headers=headers) as response:
            if response.status_code != 200:  # an error has a body; a stream never ends
                await response.aread()
            return response
    return await c.request(method, path, headers=headers, json=body)


async def test_every_route_needs_its_scope_and_the_open_ones_stay_open(
    servers: list[ServerProcess], settings: Settings, sql_engine: AsyncEngine, tmp_path: Path
) -> None:
    ingest = bearer(await make_key(sql_engine, "ingest"))
    read = bearer(await make_key(sql_engine, "read"))
    admin = bearer(await make_key(sql_engine, "admin"))
    both = bearer(await make_key(sql_engine, "ingest", "read"))
    server = start(servers, settings, tmp_path / "server.log")
    entity = f"p-{uuid.uuid4().hex[:8]}"
    bulk_item = {**EVENT, "entity_id": entity, "event_id": "e2", "time": "2026-11-25T09:00:00Z"}
    # (method, path, body, the right key, a key without the scope), in an order that works
    routes: list[tuple[str, str, Any, dict[str, str], dict[str, str]]] = [
        ("POST", f"/v1/entities/{entity}/events", EVENT, ingest, read),
        ("POST", "/v1/events", [bulk_item], ingest, read),
        ("GET", f"/v1/entities/{entity}/risk", None, read, ingest),
        ("GET", f"/v1/entities/{entity}/scores", None, read, ingest),
        ("GET", "/v1/watchlist", None, read, ingest),
        ("GET", "/v1/scores", None, read, ingest),
        ("GET", "/v1/stream", None, read, ingest),
        ("GET", "/v1/model", None, read, ingest),
        ("GET", "/metrics", None, read, ingest),
        ("DELETE", f"/v1/entities/{entity}", None, admin, both),
    ]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        for method, path, body, right, wrong in routes:
            for headers in ({}, bearer(UNKNOWN)):
                refused = await request(c, method, path, headers, body)
                assert refused.status_code == 401, (method, path, refused.text)
                assert refused.headers["www-authenticate"] == "Bearer"
                assert refused.json()["error"]["code"] == "unauthenticated"
            forbidden = await request(c, method, path, wrong, body)
            assert forbidden.status_code == 403, (method, path, forbidden.text)
            error = forbidden.json()["error"]
            assert error["code"] == "forbidden"
            scope = "admin" if method == "DELETE" else "ingest" if method == "POST" else "read"
            assert f"'{scope}'" in error["message"]
            allowed = await request(c, method, path, right, body)
            assert 200 <= allowed.status_code < 300, (method, path, allowed.text)
        for path in ("/healthz", "/readyz", "/docs", "/redoc", "/openapi.json", "/ui/"):
            assert (await c.get(path)).status_code == 200, path


async def test_writes_need_json_and_no_cors_without_an_allow_list(
    servers: list[ServerProcess], settings: Settings, sql_engine: AsyncEngine, tmp_path: Path
) -> None:
    ingest = bearer(await make_key(sql_engine, "ingest", "read"))
    server = start(servers, settings, tmp_path / "server.log")
    entity = f"p-{uuid.uuid4().hex[:8]}"
    site = {"origin": "https://evil.example"}
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        for path in (f"/v1/entities/{entity}/events", "/v1/events"):
            plain = await c.post(
                path, content=b"{}", headers={**ingest, **site, "content-type": "text/plain"}
            )
            assert plain.status_code == 415, plain.text
            assert plain.json()["error"]["code"] == "unsupported_media_type"
        answers = [
            await c.post(f"/v1/entities/{entity}/events", json=EVENT, headers={**ingest, **site}),
            await c.get("/v1/watchlist", headers={**ingest, **site}),
            await c.get("/v1/watchlist", headers=site),
            await c.get("/healthz", headers=site),
        ]
        for path in (f"/v1/entities/{entity}/events", "/v1/events", "/v1/watchlist"):
            preflight = {
                **site,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            }
            answers.append(await c.options(path, headers=preflight))
        for answer in answers:
            leaked = [h for h in answer.headers if h.lower().startswith("access-control-")]
            assert leaked == [], (answer.request.url, leaked)


async def test_cors_only_for_the_listed_origin(
    servers: list[ServerProcess], settings: Settings, tmp_path: Path
) -> None:
    server = start(servers, settings, tmp_path / "server.log", CORS_ORIGINS="https://ward.example")
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        ok = await c.options("/v1/events", headers={**preflight, "origin": "https://ward.example"})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://ward.example"
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        other = await c.options(
            "/v1/events", headers={**preflight, "origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers
        simple = await c.get("/healthz", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in simple.headers


def keys_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "riskstream.cli", "keys", *args],
        env={**__import__("os").environ, **server_env(settings)},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def statuses(url: str, headers: dict[str, str], count: int) -> list[int]:
    """``count`` requests, each on a connection of its own (so both workers get some)."""

    async def one() -> int:
        async with httpx.AsyncClient(base_url=url, timeout=10) as c:
            return (await c.get("/v1/model", headers=headers)).status_code

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def test_a_revoked_key_stops_working_within_5_s_in_both_workers(
    servers: list[ServerProcess], settings: Settings, tmp_path: Path
) -> None:
    name = f"ward-{uuid.uuid4().hex[:8]}"
    server = start(servers, settings, tmp_path / "server.log", workers=2)
    created = keys_cli(settings, "create", "--name", name, "--scope", "read")
    assert created.returncode == 0, created.stderr
    key = bearer(created.stdout.strip().splitlines()[-1])
    assert set(await statuses(server.url, key, 20)) == {200}  # cached in both workers now

    revoked = keys_cli(settings, "revoke", name)
    assert revoked.returncode == 0, revoked.stderr
    done = time.monotonic()
    while set(await statuses(server.url, key, 20)) != {401}:
        assert time.monotonic() - done < 5.0, "the revoked key still works after 5 s"
        await asyncio.sleep(0.1)
    assert set(await statuses(server.url, key, 40)) == {401}


async def test_rate_limit_across_two_workers_refuses_exactly_the_excess(
    servers: list[ServerProcess], settings: Settings, sql_engine: AsyncEngine, tmp_path: Path
) -> None:
    burst, excess = 20, 7
    # refilled so slowly (one token in ~11 days) that the count is exact, not timed
    server = start(
        servers,
        settings,
        tmp_path / "server.log",
        workers=2,
        RATE_LIMIT_BURST=str(burst),
        RATE_LIMIT_EVENTS_S="0.000001",
    )
    key = bearer(await make_key(sql_engine, "ingest"))

    async def post(i: int) -> httpx.Response:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            entity = f"p-{uuid.uuid4().hex[:8]}-{i}"
            return await c.post(f"/v1/entities/{entity}/events", json=EVENT, headers=key)

    answers = await asyncio.gather(*(post(i) for i in range(burst + excess)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * burst + [429] * excess, codes
    for refused in (a for a in answers if a.status_code == 429):
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        # bulk costs its events: an empty bucket refuses a bulk request too
        item = {**EVENT, "entity_id": "p-bulk"}
        bulk = await c.post("/v1/events", json=[item, {**item, "event_id": "e2"}], headers=key)
        assert bulk.status_code == 429
        # another key has a bucket of its own
        other = bearer(await make_key(sql_engine, "ingest"))
        bulk = await c.post("/v1/events", json=[item], headers=other)
        assert bulk.status_code == 200, bulk.text


async def test_leases_across_two_workers_refuse_at_most_a_chunk_early_and_come_back_at_stop(
    servers: list[ServerProcess],
    settings: Settings,
    sql_engine: AsyncEngine,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    """Each worker leases up to min(burst, rate x RATE_LIMIT_LEASE_S) tokens (here 7) and
    spends them locally: a worker may be refused while the other still holds up to a chunk,
    never more; and no token is lost: a worker gives its lease back when it stops."""
    burst, chunk = 20, 7
    server = start(
        servers,
        settings,
        tmp_path / "server.log",
        workers=2,
        RATE_LIMIT_BURST=str(burst),
        RATE_LIMIT_EVENTS_S="0.002",  # a token in 500 s
        RATE_LIMIT_LEASE_S="3500",  # chunk: 7 tokens, held until the server stops
    )
    light, heavy = [await make_key(sql_engine, "ingest") for _ in range(2)]

    async def post(secret: str, i: int) -> int:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            entity = f"p-{uuid.uuid4().hex[:8]}-{i}"
            answer = await c.post(
                f"/v1/entities/{entity}/events", json=EVENT, headers=bearer(secret)
            )
            return answer.status_code

    # 10 events take at least 2 leases of 1 + 7: some are still held when the server stops
    assert await asyncio.gather(*(post(light, i) for i in range(10))) == [200] * 10
    codes = await asyncio.gather(*(post(heavy, i) for i in range(30)))
    allowed = codes.count(200)
    assert codes.count(429) == 30 - allowed
    assert burst - chunk <= allowed <= burst
    server.stop()  # SIGTERM: each worker gives back what it leased and did not spend

    async def tokens(secret: str) -> float:
        async with sql_engine.connect() as db:
            name = await db.scalar(
                select(api_keys.c.name).where(api_keys.c.key_id == key_id_of(secret))
            )
        return float(await redis_client.hget(f"{settings.key_prefix}:rl:{name}", "tokens"))

    assert 10 + await tokens(light) == pytest.approx(burst, abs=0.1)
    assert allowed + await tokens(heavy) == pytest.approx(burst, abs=0.1)


async def test_sse_caps_per_key_and_per_process(
    servers: list[ServerProcess], settings: Settings, sql_engine: AsyncEngine, tmp_path: Path
) -> None:
    server = start(
        servers, settings, tmp_path / "server.log", SSE_MAX_PER_KEY="2", SSE_MAX_PER_PROCESS="3"
    )
    a, b, c_ = [bearer(await make_key(sql_engine, "read")) for _ in range(3)]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        held = []
        for key in (a, a):
            stream = c.stream("GET", "/v1/stream", headers=key)
            response = await stream.__aenter__()
            assert response.status_code == 200
            held.append(stream)
        third = await c.get("/v1/stream", headers=a)
        assert third.status_code == 429, third.text
        assert third.json()["error"]["code"] == "rate_limited"
        assert int(third.headers["retry-after"]) >= 1

        other = c.stream("GET", "/v1/stream", headers=b)
        assert (await other.__aenter__()).status_code == 200
        held.append(other)
        full = await c.get("/v1/stream", headers=c_)
        assert full.status_code == 503, full.text
        assert int(full.headers["retry-after"]) >= 1

        await held.pop(0).__aexit__(None, None, None)  # one of a's streams ends
        deadline = time.monotonic() + 10
        while True:
            again = c.stream("GET", "/v1/stream", headers=a)
            response = await again.__aenter__()
            if response.status_code == 200:
                held.append(again)
                break
            await again.__aexit__(None, None, None)
            assert time.monotonic() < deadline, "a closed stream's slot was never given back"
            await asyncio.sleep(0.2)
        for stream in held:
            await stream.__aexit__(None, None, None)


async def wait_rows(engine: AsyncEngine, query: Any, count: int) -> list[Any]:
    deadline = time.monotonic() + 20
    while True:
        async with engine.connect() as connection:
            rows = list((await connection.execute(query)).all())
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.1)


async def test_audit_names_the_key_and_the_log_holds_no_secret_nor_value(
    servers: list[ServerProcess], settings: Settings, sql_engine: AsyncEngine, tmp_path: Path
) -> None:
    secret = await make_key(sql_engine, "ingest", "admin")
    key = bearer(secret)
    async with sql_engine.connect() as connection:
        name = (
            await connection.execute(
                select(api_keys.c.name).where(api_keys.c.key_id == key_id_of(secret))
            )
        ).scalar_one()
    log = tmp_path / "server.log"
    server = start(servers, settings, log)
    entity = f"p-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        single = await c.post(f"/v1/entities/{entity}/events", json=EVENT, headers=key)
        assert single.status_code == 200, single.text
        item = {**EVENT, "entity_id": entity, "event_id": "e2", "time": "2026-11-25T09:00:00Z"}
        assert (await c.post("/v1/events", json=[item], headers=key)).status_code == 200
        # refusals and bad input must not log the secret or values either
        await c.post(f"/v1/entities/{entity}/events", json=EVENT, headers=bearer(secret + "x"))
        await c.post(
            f"/v1/entities/{entity}/events",
            json={**EVENT, "values": {"Nope": 93.8125}},
            headers=key,
        )
        score_rows = await wait_rows(
            sql_engine, select(scores.c.key_name).where(scores.c.entity_id == entity), 2
        )
        assert [r.key_name for r in score_rows] == [name, name]
        event_rows = await wait_rows(
            sql_engine, select(events.c.key_name).where(events.c.entity_id == entity), 2
        )
        assert [r.key_name for r in event_rows] == [name, name]

        before = time.time()
        forgotten = await c.delete(f"/v1/entities/{entity}", headers=key)
        assert forgotten.status_code == 200, forgotten.text
    async with sql_engine.connect() as connection:
        audit = (
            await connection.execute(
                select(deletions.c.key_name, deletions.c.deleted_at).where(
                    deletions.c.entity_id == entity
                )
            )
        ).all()
    assert [row.key_name for row in audit] == [name]
    assert audit[0].deleted_at.timestamp() >= before - 5
    server.stop()
    async with sql_engine.connect() as connection:
        used = (
            await connection.execute(select(api_keys.c.last_used_at).where(api_keys.c.name == name))
        ).scalar_one()
    assert used is not None and used.timestamp() >= before - 60  # flushed, at the latest at exit
    text = log.read_text(errors="replace")
    assert secret not in text
    assert secret[-43:] not in text  # its random part (which may itself hold "_")
    assert VALUE_TEXT not in text
