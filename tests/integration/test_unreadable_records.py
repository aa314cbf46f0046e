"""One record the readers cannot render (corrupt JSON, a time no timestamp can say) written
straight into Redis must not blind everyone: the watchlist, the feed, the SSE stream skip it and
count it, and the entity's latest risk answers a clean error for that entity alone."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import orjson
import redis.asyncio as aioredis
from riskstream.adapters.codec import score_to_dict
from riskstream.adapters.redis_common import ViewKeys
from riskstream.core.domain import Score
from riskstream.settings import Settings

from tests.support.server import ServerProcess
from tests.support.service import Running, server_env

T0 = 1_790_000_000


def _score(entity_id: str, t: float) -> Score:
    return Score("0" * 32, entity_id, "e0", 1, t, T0, "m", "1", {"aki_48h": 0.99})


async def corrupt(redis: aioredis.Redis, prefix: str, output: str) -> None:
    """Two entities with broken state at the top of the watchlist, and broken feed entries."""
    keys = ViewKeys(prefix)
    broken_json = {"step": 1, "t": T0, "latest": b"{not json"}
    far_future = {"step": 1, "t": 1e20, "latest": orjson.dumps(score_to_dict(_score("b", 1e20)))}
    for entity_id, fields in (("bad-json", broken_json), ("bad-time", far_future)):
        await redis.hset(keys.state(entity_id), mapping=fields)
        await redis.zadd(keys.watchlist(output), {entity_id: 0.99})
    await redis.xadd(keys.feed, {"d": b"{not json"})
    bad_time = {"score": score_to_dict(_score("bad-time", 1e20)), "alerts": {}}
    await redis.xadd(keys.feed, {"d": orjson.dumps(bad_time)})


async def post(client: httpx.AsyncClient, entity: str, k: int) -> None:
    r = await client.post(
        f"/v1/entities/{entity}/events",
        json={"event_id": f"e{k}", "time": T0 + 3600 * k, "values": {"HR": 70 + k}},
    )
    assert r.status_code == 200, r.text


def unreadable(metrics: str, view: str) -> float:
    pattern = rf'riskstream_unreadable_records_total\{{view="{view}"\}} ([0-9.e+]+)'
    found = re.search(pattern, metrics)
    return float(found.group(1)) if found else 0.0


async def test_watchlist_feed_and_latest_risk_skip_what_they_cannot_render(
    service: Running, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    client = service.client
    output = service.services.model.manifest.output_names[0]
    await post(client, "good-1", 0)
    await corrupt(redis_client, key_prefix, output)
    await post(client, "good-2", 1)  # after the broken feed entries
    await redis_client.xadd(ViewKeys(key_prefix).feed, {"d": b"\xff"})  # the last entry broken

    watch = await client.get("/v1/watchlist", params={"output": output})
    assert watch.status_code == 200, watch.text
    assert {e["entity_id"] for e in watch.json()["entities"]} == {"good-1", "good-2"}

    feed = await client.get("/v1/scores")
    assert feed.status_code == 200, feed.text
    page = feed.json()
    assert [s["entity_id"] for s in page["scores"]] == ["good-1", "good-2"]
    # the cursor moves past the broken entry at the end, so the next poll does not re-read it
    last = (await redis_client.xrevrange(ViewKeys(key_prefix).feed, count=1))[0][0].decode()
    assert page["next_cursor"] == last
    again = (await client.get("/v1/scores", params={"cursor": page["next_cursor"]})).json()
    assert again["scores"] == []

    for entity_id in ("bad-json", "bad-time"):
        risk = await client.get(f"/v1/entities/{entity_id}/risk")
        assert risk.status_code == 409, risk.text
        error = risk.json()["error"]
        assert (error["code"], error["field"]) == ("unreadable_record", "entity_id")
    assert (await client.get("/v1/entities/good-1/risk")).status_code == 200
    # DELETE still clears a broken entity
    assert (await client.delete("/v1/entities/bad-json")).status_code == 200

    metrics = (await client.get("/metrics")).text
    assert unreadable(metrics, "watchlist") == 2
    assert unreadable(metrics, "feed") == 3
    assert unreadable(metrics, "latest") == 2


async def test_the_sse_stream_skips_what_it_cannot_render(
    settings: Settings, tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    env = server_env(settings, STREAM_POLL_S="0.05")
    server = ServerProcess(env, tmp_path / "sse.log")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            await post(client, "good-0", 0)
            start = (await client.get("/v1/scores")).json()["next_cursor"]
            await corrupt(redis_client, settings.key_prefix, "aki_48h")
            await post(client, "good-1", 1)
            got: list[dict] = []

            async def read() -> None:
                headers = {"Last-Event-ID": start}
                async with client.stream("GET", "/v1/stream", headers=headers) as response:
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        assert not line.startswith("event: error"), line
                        if line.startswith("data:"):
                            got.append(json.loads(line.partition(":")[2]))
                            return

            await asyncio.wait_for(read(), timeout=20)
            assert [g["entity_id"] for g in got] == ["good-1"]
    finally:
        server.stop()
