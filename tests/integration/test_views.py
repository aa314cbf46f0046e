"""The read API dashboards poll: cursor feed, watchlist, ETags, alerts, and SSE resume."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from riskstream.settings import Settings

from tests.support.server import ServerProcess
from tests.support.service import Running, server_env

T0 = 1_790_000_000


async def post(service: Running, entity: str, event: str, k: int, **values: float) -> dict:
    r = await service.client.post(
        f"/v1/entities/{entity}/events",
        json={"event_id": event, "time": T0 + 3600 * k, "values": values},
    )
    assert r.status_code == 200, r.text
    return r.json()


async def test_the_feed_gives_every_score_once_across_polls_while_writes_go_on(
    service: Running, key_prefix: str
) -> None:
    entities = [f"{key_prefix}-{i}" for i in range(8)]
    sent: set[tuple[str, str]] = set()
    done = asyncio.Event()

    async def write(entity: str) -> None:
        for k in range(15):
            await post(service, entity, f"e{k}", k, HR=60 + k)
            sent.add((entity, f"e{k}"))
            await asyncio.sleep(0)

    async def writers() -> None:
        await asyncio.gather(*(write(e) for e in entities))
        done.set()

    seen: list[tuple[str, str, int]] = []
    cursor = None
    task = asyncio.create_task(writers())
    while True:
        finished = done.is_set()
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        page = (await service.client.get("/v1/scores", params=params)).json()
        seen += [(s["entity_id"], s["event_id"], s["step"]) for s in page["scores"]]
        cursor = page["next_cursor"]
        if finished and not page["scores"]:
            break
        await asyncio.sleep(0.005)
    await task
    assert len(seen) == len(set(seen)) == 8 * 15  # no repeats
    assert {(e, ev) for e, ev, _ in seen} == sent  # no gaps
    for entity in entities:  # commit order keeps each entity's steps in order
        assert [s for e, _, s in seen if e == entity] == list(range(1, 16))


async def test_feed_and_watchlist_answer_304_until_something_changes(service: Running) -> None:
    await post(service, "w-a", "e0", 0)
    first = await service.client.get("/v1/watchlist")
    assert first.status_code == 200 and first.headers["cache-control"] == "no-cache"
    etag = first.headers["etag"]
    again = await service.client.get("/v1/watchlist", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    feed = await service.client.get("/v1/scores", params={"limit": 1000})
    cursor = feed.json()["next_cursor"]
    poll = await service.client.get("/v1/scores", params={"cursor": cursor, "limit": 1000})
    assert poll.json()["scores"] == []
    cached = await service.client.get(
        "/v1/scores",
        params={"cursor": cursor, "limit": 1000},
        headers={"If-None-Match": poll.headers["etag"]},
    )
    assert cached.status_code == 304

    await post(service, "w-a", "e1", 1)
    changed = await service.client.get("/v1/watchlist", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    fresh = await service.client.get(
        "/v1/scores",
        params={"cursor": cursor, "limit": 1000},
        headers={"If-None-Match": poll.headers["etag"]},
    )
    assert fresh.status_code == 200 and [s["event_id"] for s in fresh.json()["scores"]] == ["e1"]


async def test_the_watchlist_orders_by_current_risk_and_shows_change(
    service: Running, key_prefix: str
) -> None:
    output = service.services.model.manifest.output_names[0]
    latest: dict[str, dict] = {}
    previous: dict[str, dict] = {}
    for i in range(6):
        entity = f"{key_prefix}-{i}"
        previous[entity] = await post(service, entity, "e0", 0, Creatinine=0.5 + i / 3)
        latest[entity] = await post(service, entity, "e1", 1, Creatinine=2.5 - i / 4, HR=140)
    body = (
        await service.client.get("/v1/watchlist", params={"output": output, "limit": 1000})
    ).json()
    mine = [row for row in body["entities"] if row["entity_id"].startswith(key_prefix)]
    assert [r["entity_id"] for r in mine] == sorted(
        latest, key=lambda e: latest[e]["risk"][output], reverse=True
    )
    risks = [row["risk"][output] for row in body["entities"]]
    assert risks == sorted(risks, reverse=True)
    for row in mine:
        e = row["entity_id"]
        assert row["step"] == 2 and row["risk"] == latest[e]["risk"]
        want = latest[e]["risk"][output] - previous[e]["risk"][output]
        assert row["change"][output] == pytest.approx(want, abs=1e-9)
    cut = sorted(r["risk"][output] for r in mine)[3]
    high = (
        await service.client.get(
            "/v1/watchlist", params={"output": output, "min_risk": cut, "limit": 1000}
        )
    ).json()
    assert all(r["risk"][output] >= cut for r in high["entities"])
    await service.client.delete(f"/v1/entities/{key_prefix}-0")
    after = (await service.client.get("/v1/watchlist", params={"limit": 1000})).json()
    assert f"{key_prefix}-0" not in {r["entity_id"] for r in after["entities"]}
    bad = await service.client.get("/v1/watchlist", params={"output": "nope"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "output"


async def test_alerts_begin_once_and_are_marked_in_watchlist_and_feed(
    settings: Settings, key_prefix: str
) -> None:
    from riskstream.bootstrap import create_app

    outputs_always = settings.model_copy(update={"default_alert_threshold": (0.0, 0.0)})
    app = create_app(outputs_always)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rs") as client:
            for k in range(3):
                await client.post(
                    f"/v1/entities/{key_prefix}-a/events",
                    json={"event_id": f"e{k}", "time": T0 + 3600 * k, "values": {}},
                )
            watch = (await client.get("/v1/watchlist")).json()
            row = watch["entities"][0]
            began = "2026-09-21T14:13:20Z"  # the first event's time: the alert began there
            assert all(a == {"since": began} for a in row["alerts"].values())
            assert watch["thresholds"][next(iter(row["alerts"]))] == {"raise": 0.0, "clear": 0.0}
            feed = (await client.get("/v1/scores")).json()["scores"]
            assert [set(s["alerts"]) for s in feed] == [set(row["alerts"])] * 3


async def test_entity_history_can_carry_the_event_values(service: Running) -> None:
    await post(service, "vals", "e0", 0, HR=88.5)
    await post(service, "vals", "e1", 1, Creatinine=1.7)
    for _ in range(200):
        body = (
            await service.client.get("/v1/entities/vals/scores", params={"include_values": True})
        ).json()
        if len(body["scores"]) == 2:
            break
        await asyncio.sleep(0.05)
    assert [s["values"] for s in body["scores"]] == [{"HR": 88.5}, {"Creatinine": 1.7}]


@pytest.mark.slow
async def test_sse_streams_scores_and_resumes_after_last_event_id(
    settings: Settings, tmp_path: Path
) -> None:
    env = server_env(settings, STREAM_POLL_S="0.05", STREAM_HEARTBEAT_S="0.2")
    server = ServerProcess(env, tmp_path / "sse.log")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:

            async def send(k: int) -> None:
                r = await client.post(
                    "/v1/entities/sse/events",
                    json={"event_id": f"e{k}", "time": T0 + k, "values": {}},
                )
                assert r.status_code == 200

            heard = asyncio.Event()  # the stream's first heartbeat

            async def read(headers: dict[str, str], count: int) -> tuple[list[dict], str, bool]:
                got: list[dict] = []
                last_id = ""
                heartbeat = False
                async with client.stream("GET", "/v1/stream", headers=headers) as response:
                    assert response.headers["content-type"].startswith("text/event-stream")
                    event: dict[str, str] = {}
                    async for line in response.aiter_lines():
                        if line.startswith(": heartbeat"):
                            heartbeat = True
                            heard.set()
                        elif line.startswith(("id:", "data:", "event:")):
                            key, _, value = line.partition(":")
                            event[key] = value.strip()
                        elif line == "" and "data" in event:
                            got.append(json.loads(event["data"]))
                            last_id = event["id"]
                            event = {}
                            if len(got) == count:
                                break
                return got, last_id, heartbeat

            await send(0)
            first_poll = (await client.get("/v1/scores")).json()
            start = first_poll["next_cursor"]
            reader = asyncio.create_task(read({"Last-Event-ID": start}, 3))
            # heartbeats flow while nothing happens: the scores are sent once one came
            await asyncio.wait_for(heard.wait(), timeout=10)
            for k in range(1, 6):
                await send(k)
            got, last_id, heartbeat = await reader
            assert heartbeat
            assert [g["event_id"] for g in got] == ["e1", "e2", "e3"]
            assert last_id == got[-1]["cursor"]
            rest, _, _ = await read({"Last-Event-ID": last_id}, 2)
            assert [g["event_id"] for g in rest] == ["e4", "e5"]  # no gap, no repeat
            expired = await client.get("/v1/stream", headers={"Last-Event-ID": "junk"})
            assert expired.status_code == 422
    finally:
        server.stop()
