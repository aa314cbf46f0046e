"""Poison inputs (issue 11): a time, value or id outside the input domain is refused with 422
naming the field, through the fast path, the FastAPI route and every bulk item alike, and leaves
the state, the SQL log, the watchlist and the feed as they were; valid events posted next are all
in SQL within 5 s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from riskstream.adapters.sql.score_log import SqlScoreLog
from riskstream.bootstrap import create_app
from riskstream.settings import Settings
from riskstream.web.fast_path import SingleEventFastPath

from tests.support.service import wait_logged

T = float(int(time.time()) // 3600 * 3600 - 86_400)  # yesterday, on the hour
HUGE_INT = 10**400  # JSON has no limit on digits; a float cannot hold it

# (name, fields of the event body, the field named in the 422)
POISON: list[tuple[str, dict[str, Any], str]] = [
    ("time 1e20", {"time": 1e20}, "time"),
    ("time -1e12", {"time": -1e12}, "time"),
    ("time 3e11", {"time": 3e11}, "time"),
    ("time year 9999 -14:00", {"time": "9999-12-31T23:59:59-14:00"}, "time"),
    ("time year 1 +14:00", {"time": "0001-01-01T00:00:00+14:00"}, "time"),
    ("time an hour ahead", {"time": time.time() + 3600}, "time"),
    ("time before 1900", {"time": "1899-12-31T23:59:59Z"}, "time"),
    ("time a 400-digit integer", {"time": HUGE_INT}, "time"),
    ("value 1e308", {"values": {"HR": 1e308}}, "values.HR"),
    ("value -1e39", {"values": {"MAP": -1e39}}, "values.MAP"),
    ("value a 400-digit integer", {"values": {"HR": HUGE_INT}}, "values.HR"),
    ("value out of range", {"values": {"HR": 1000}}, "values.HR"),
    ("value below range", {"values": {"Temp": 5.0}}, "values.Temp"),
    ("event id with a slash", {"event_id": "a/b"}, "event_id"),
    ("event id with a space", {"event_id": "e 1"}, "event_id"),
    ("event id with a newline", {"event_id": "e1\n"}, "event_id"),
    ("event id '..'", {"event_id": ".."}, "event_id"),
]


def body(k: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"e{k}", "time": T + 60 * k, "values": {"HR": 80 + k}} | fields


@pytest.fixture(params=["fast path", "route"])
async def client(
    request: pytest.FixtureRequest, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """The service in-process; "route" without the fast path, so the FastAPI route scores."""
    app: FastAPI = create_app(settings)
    if request.param == "route":
        app.user_middleware = [m for m in app.user_middleware if m.cls is not SingleEventFastPath]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rs") as client:
            yield client


async def snapshot(client: httpx.AsyncClient, log: SqlScoreLog, entity: str) -> dict[str, Any]:
    """Everything a refused event must leave as it was, read back through the API and SQL."""
    risk = await client.get(f"/v1/entities/{entity}/risk")
    watchlist = await client.get("/v1/watchlist", params={"limit": 1000})
    feed = await client.get("/v1/scores", params={"limit": 5000})
    assert watchlist.status_code == 200 and feed.status_code == 200, (watchlist.text, feed.text)
    history = await log.history_with_values(entity, since=None, after_step=None, limit=1000)
    return {
        "risk": (risk.status_code, risk.json()),
        "watchlist": (watchlist.headers["etag"], watchlist.json()),
        "feed": feed.json(),
        "sql": [(h.score, dict(h.values)) for h in history],
    }


def refused(response: httpx.Response, field: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "invalid_input" and error["field"] == field, error
    return error


async def valid_traffic_lands(
    client: httpx.AsyncClient, log: SqlScoreLog, entities: list[str], start: int
) -> None:
    """Valid events of the entities are scored and all in SQL within 5 s."""
    for entity in entities:
        for k in (start, start + 1):
            response = await client.post(f"/v1/entities/{entity}/events", json=body(k))
            assert response.status_code == 200, response.text
    deadline = time.monotonic() + 5.0
    for entity in entities:
        want = {f"e{start}", f"e{start + 1}"}
        while True:
            logged = await log.history(entity, since=None, after_step=None, limit=1000)
            if want <= {s.event_id for s in logged} or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert want <= {s.event_id for s in logged}, (entity, logged)


@pytest.mark.parametrize(("name", "fields", "field"), POISON, ids=[p[0] for p in POISON])
async def test_a_poison_event_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    score_log: SqlScoreLog,
    key_prefix: str,
    name: str,
    fields: dict[str, Any],
    field: str,
) -> None:
    entity, other = f"{key_prefix}-p", f"{key_prefix}-q"
    assert (await client.post(f"/v1/entities/{entity}/events", json=body(1))).status_code == 200
    assert len(await wait_logged(score_log, entity, 1)) == 1
    before = await snapshot(client, score_log, entity)

    response = await client.post(f"/v1/entities/{entity}/events", json=body(2, **fields))
    error = refused(response, field)
    if name.startswith("time") and "integer" not in name:
        assert "1900-01-01T00:00:00Z" in error["message"] and "300 s" in error["message"]
    if "range" in name:
        assert ("[0, 400]" if "HR" in field else "[10, 50]") in error["message"]
    if name.startswith("event id"):
        assert ". _ ~ : @ -" in error["message"]
    assert await snapshot(client, score_log, entity) == before

    await valid_traffic_lands(client, score_log, [entity, other], start=2)
    assert (await client.get(f"/v1/entities/{entity}/risk")).json()["step"] == 3


@pytest.mark.parametrize("entity", ["a b", "-p1", "p1%09", "bett-ü", "~p1", "p1%0A"])
async def test_an_entity_id_outside_the_id_set_is_refused_on_the_single_route(
    client: httpx.AsyncClient, key_prefix: str, entity: str
) -> None:
    feed = (await client.get("/v1/scores")).json()
    error = refused(await client.post(f"/v1/entities/{entity}/events", json=body(1)), "entity_id")
    assert ". _ ~ : @ -" in error["message"]
    assert (await client.get(f"/v1/entities/{entity}/risk")).status_code == 404
    assert (await client.get("/v1/scores")).json() == feed


async def test_poison_bulk_items_are_refused_one_by_one_and_change_nothing(
    client: httpx.AsyncClient, score_log: SqlScoreLog, key_prefix: str
) -> None:
    entity, clean = f"{key_prefix}-p", f"{key_prefix}-clean"
    assert (await client.post(f"/v1/entities/{entity}/events", json=body(1))).status_code == 200
    assert len(await wait_logged(score_log, entity, 1)) == 1
    before = await snapshot(client, score_log, entity)

    # (a number of 400 digits is left out: the bulk body's JSON parser refuses the whole body)
    poison = [
        p
        for p in POISON
        if p[1].get("time") != HUGE_INT and HUGE_INT not in p[1].get("values", {}).values()
    ]
    items = [
        {"entity_id": entity, **body(2 + i, **fields)} for i, (_, fields, _) in enumerate(poison)
    ]
    items.append({"entity_id": "ward/bed1", **body(2)})
    items.append({"entity_id": "ward bed1", **body(2)})
    fields = [field for _, _, field in poison] + ["entity_id", "entity_id"]
    response = await client.post("/v1/events", json=items)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["status"], r["error"]["field"]) for r in results] == [(422, f) for f in fields]
    assert response.json()["accepted"] == 0
    assert await snapshot(client, score_log, entity) == before
    assert (await client.get("/v1/entities/ward/bed1/risk")).status_code == 404
    watchlist = (await client.get("/v1/watchlist", params={"limit": 1000})).json()["entities"]
    assert [w["entity_id"] for w in watchlist] == [entity]

    # mixed with valid items: those are scored, the poison ones refused
    mixed = [
        {"entity_id": entity, **body(2, time=1e20)},
        {"entity_id": clean, **body(1)},
        {"entity_id": "ward/bed1", **body(1)},
        {"entity_id": entity, **body(3, values={"HR": 1e308})},
        {"entity_id": clean, **body(2)},
    ]
    results = (await client.post("/v1/events", json=mixed)).json()["results"]
    assert [r["status"] for r in results] == [422, 200, 422, 422, 200]
    assert [r["step"] for r in results if r["status"] == 200] == [1, 2]
    assert (await snapshot(client, score_log, entity))["sql"] == before["sql"]
    assert len(await wait_logged(score_log, clean, 2, timeout=5.0)) == 2

    await valid_traffic_lands(client, score_log, [entity, clean], start=3)


async def test_poison_ndjson_items_are_refused_one_by_one(
    client: httpx.AsyncClient, score_log: SqlScoreLog, key_prefix: str
) -> None:
    entity = f"{key_prefix}-n"
    lines = [
        f'{{"entity_id": "{entity}", "event_id": "e1", "time": 1e20}}',
        f'{{"entity_id": "{entity}", "event_id": "e2", "time": {T}, "values": {{"HR": 3e38}}}}',
        f'{{"entity_id": "{entity}", "event_id": "e3", "time": {T}, "values": {{"HR": 1e308}}}}',
        f'{{"entity_id": "{entity}/x", "event_id": "e4", "time": {T}}}',
        f'{{"entity_id": "{entity}", "event_id": "e5", "time": {T}, "values": {{"HR": 90}}}}',
    ]
    response = await client.post(
        "/v1/events",
        content="\n".join(lines).encode(),
        headers={"content-type": "application/x-ndjson"},
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [422, 422, 422, 422, 200]
    assert [r["error"]["field"] for r in results[:4]] == [
        "time",
        "values.HR",
        "values.HR",
        "entity_id",
    ]
    assert results[4]["step"] == 1
    assert [s.event_id for s in await wait_logged(score_log, entity, 1, timeout=5.0)] == ["e5"]


async def test_the_time_window_follows_the_settings(settings: Settings, key_prefix: str) -> None:
    own = settings.model_copy(
        update={
            "event_time_min": datetime(2026, 1, 1, tzinfo=UTC),
            "event_time_max_ahead_s": 0.0,
        }
    )
    app = create_app(own)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rs") as client:
            path = f"/v1/entities/{key_prefix}-w/events"
            early = {"event_id": "e1", "time": "2025-12-31T23:59:59Z"}
            error = refused(await client.post(path, json=early), "time")
            assert "from 2026-01-01T00:00:00Z to 0 s after the server's clock" in error["message"]
            ahead = {"event_id": "e1", "time": time.time() + 30}
            refused(await client.post(path, json=ahead), "time")
            first = {"event_id": "e1", "time": "2026-01-01T00:00:00Z"}
            assert (await client.post(path, json=first)).status_code == 200
            now = {"event_id": "e2", "time": time.time() - 1}
            assert (await client.post(path, json=now)).status_code == 200


def test_the_time_window_settings_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    default = Settings()
    assert default.event_time_min == datetime(1900, 1, 1, tzinfo=UTC)
    assert default.event_time_max_ahead_s == 300
    monkeypatch.setenv("EVENT_TIME_MIN", "2000-01-01T01:00:00+01:00")
    monkeypatch.setenv("EVENT_TIME_MAX_AHEAD_S", "60")
    read = Settings()
    assert read.event_time_min.timestamp() == 946_684_800 and read.event_time_max_ahead_s == 60
    monkeypatch.setenv("EVENT_TIME_MIN", "2000-01-01T00:00:00")
    with pytest.raises(ValueError, match="UTC offset"):
        Settings()
