"""Fault drills against real processes: ``riskstream serve`` subprocesses on a redis-server or a
PostgreSQL of the test's own that is restarted empty, frozen, stopped; a worker killed mid-request;
poison inputs. After each, nothing is stuck: every score answered 200 reaches the SQL log exactly
once, and every entity's steps go 1..n with none skipped or doubled.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from riskstream.adapters.sql.database import create_engine
from riskstream.adapters.sql.score_log import SqlScoreLog

from tests.support.drills import (
    logged_steps,
    missing_from_sql,
    server_env,
    serving_pid,
    worker_pids,
)
from tests.support.processes import PostgresServer, RedisServer
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

# Event times: in the past (the service refuses times far ahead of its clock), a day per 1440 steps.
T0 = int(time.time()) - 30 * 86_400
CLIENT_TIMEOUT_S = 15.0


def _event(k: int) -> dict[str, Any]:
    """The k-th event (0-based) of an entity: its id and time say its place in the sequence."""
    return {"event_id": f"e{k}", "time": T0 + 60 * k, "values": {"HR": 60 + k % 40}}


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start server processes; every one is stopped after the test, passed or failed."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str], *, workers: int = 1) -> ServerProcess:
        server = ServerProcess(env, tmp_path / f"server{len(started)}.log", workers=workers)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
async def own_postgres_log(own_postgres: PostgresServer) -> AsyncIterator[SqlScoreLog]:
    engine = create_engine(own_postgres.url)
    try:
        yield SqlScoreLog(engine)
    finally:
        await engine.dispose()


def _env(
    redis_url: str, database_url: str, key_prefix: str, model_dir: Path, tmp_path: Path
) -> dict[str, str]:
    return server_env(
        redis_url=redis_url,
        database_url=database_url,
        key_prefix=key_prefix,
        model_dir=model_dir,
        data_dir=tmp_path / "data",
    )


def _uid() -> str:
    return uuid.uuid4().hex[:8]


async def _send_until_answered(
    client: httpx.AsyncClient,
    url: str,
    entity: str,
    event: dict[str, Any],
    seen: list[str],
    *,
    deadline_s: float = 60.0,
) -> dict[str, Any]:
    """POST an event, re-sending it (same id) after every 503 or timeout until it is answered 200.

    Every answer that is neither 200 nor a well-formed 503 is recorded in ``seen`` as a failure
    (a 500, a 503 without Retry-After, a request hanging past the client timeout).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while loop.time() < deadline:
        try:
            r = await client.post(f"{url}/v1/entities/{entity}/events", json=event)
        except httpx.TimeoutException:
            seen.append(f"{entity}/{event['event_id']}: no answer within {CLIENT_TIMEOUT_S}s")
            continue
        except httpx.TransportError as exc:
            seen.append(f"{entity}/{event['event_id']}: {exc!r}")
            await asyncio.sleep(0.5)
            continue
        if r.status_code == 200:
            body: dict[str, Any] = r.json()
            return body
        if r.status_code == 503 and "retry-after" in r.headers:
            await asyncio.sleep(min(float(r.headers["retry-after"]), 1.0))
            continue
        seen.append(f"{entity}/{event['event_id']}: {r.status_code} {r.text[:300]}")
        await asyncio.sleep(0.5)
    raise AssertionError(f"{entity}/{event['event_id']} never answered 200: {seen[-3:]}")


async def _readyz_until(
    client: httpx.AsyncClient, url: str, condition: Callable[[httpx.Response], bool], timeout: float
) -> httpx.Response:
    """Poll /readyz until ``condition`` holds or the deadline passes; the last answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        r = await client.get(f"{url}/readyz")
        if condition(r) or loop.time() > deadline:
            return r
        await asyncio.sleep(0.25)


def _degraded_by(field: str) -> Callable[[httpx.Response], bool]:
    def check(r: httpx.Response) -> bool:
        if r.status_code != 200:
            return False
        body = r.json()
        fields = {w.get("field") for w in body.get("warnings", [])}
        return bool(body.get("status") == "degraded" and field in fields)

    return check


# -- 1. an external Redis restarted empty ---------------------------------------------------------


async def test_redis_restarted_empty_the_service_recovers_and_readiness_reports_it(
    own_redis: RedisServer,
    database_url: str,
    key_prefix: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    score_log: SqlScoreLog,
    launch: Callable[..., ServerProcess],
) -> None:
    server = launch(_env(own_redis.url, database_url, key_prefix, tiny_model_dir, tmp_path))
    uid = _uid()
    known = [f"empty-{uid}-{i}" for i in range(5)]
    failures: list[str] = []
    before: dict[str, dict[str, int]] = defaultdict(dict)
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as client:
        for k in range(3):
            for entity in known:
                r = await client.post(f"{server.url}/v1/entities/{entity}/events", json=_event(k))
                assert r.status_code == 200, r.text
                before[entity][f"e{k}"] = r.json()["step"]
        assert not await missing_from_sql(score_log, before, timeout=20)

        own_redis.restart_empty()  # no persistence: state, outbox and its consumer group are gone

        after: dict[str, dict[str, int]] = defaultdict(dict)
        fresh = [f"empty-{uid}-new{i}" for i in range(3)]
        for k in range(3, 6):
            for entity in known + fresh:
                answer = await _send_until_answered(
                    client, server.url, entity, _event(k), failures, deadline_s=30
                )
                after[entity][answer["event_id"]] = answer["step"]
        assert server.process.poll() is None, "the server process died"
        missing = await missing_from_sql(score_log, after, timeout=20)
        assert not missing, (
            f"{len(missing)} of {sum(map(len, after.values()))} scores answered 200 after Redis "
            f"restarted empty are not in SQL after 20 s, e.g. {missing[:3]}; "
            f"server log: {server.log_tail(1500)}"
        )
        assert not failures, failures[:5]

        ready = await _readyz_until(client, server.url, _degraded_by("redis"), timeout=15)
        assert ready.status_code == 200, ready.text
        assert _degraded_by("redis")(ready), (
            f"/readyz does not report the emptied Redis: {ready.text}"
        )
    assert not await missing_from_sql(score_log, before, timeout=1)


# -- 2. Redis frozen (SIGSTOP) for 5 s -------------------------------------------------------------


async def test_redis_frozen_5s_gives_503_then_recovers_and_retries_apply_once(
    own_redis: RedisServer,
    database_url: str,
    key_prefix: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    score_log: SqlScoreLog,
    launch: Callable[..., ServerProcess],
) -> None:
    server = launch(_env(own_redis.url, database_url, key_prefix, tiny_model_dir, tmp_path))
    uid = _uid()
    entities = [f"frozen-{uid}-{i}" for i in range(6)]
    probes = [f"frozen-{uid}-probe{i}" for i in range(4)]
    answers: dict[str, list[dict[str, Any]]] = {e: [] for e in entities}
    failures: list[str] = []
    statuses: list[int] = []
    leaks: list[str] = []
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as client:
        client.event_hooks["response"] = [_count_status(statuses, leaks)]
        stop_at = loop.time() + 13.0

        async def steady(entity: str) -> None:
            k = 0
            while loop.time() < stop_at:
                answer = await _send_until_answered(client, server.url, entity, _event(k), failures)
                answers[entity].append(answer)
                k += 1
                await asyncio.sleep(0.02)

        async def freeze_and_probe() -> list[bool]:
            await asyncio.sleep(2.0)
            own_redis.freeze()
            try:
                await asyncio.sleep(1.0)
                # Sent while Redis is frozen, given up by the client after 2 s: the server
                # applies them once Redis is back, and their answers are lost.
                async with httpx.AsyncClient(timeout=2.0) as impatient:
                    lost = await asyncio.gather(
                        *(_answered(impatient, server.url, p, _event(0)) for p in probes)
                    )
                await asyncio.sleep(5.0 - 1.0 - 2.0)
            finally:
                own_redis.thaw()
            return lost

        lost = (await asyncio.gather(*(steady(e) for e in entities), freeze_and_probe()))[-1]
        assert lost is not None
        assert not any(lost), "a request was answered while Redis was frozen"
        # every load client got a 200 after the thaw: the service recovered by itself
        assert server.process.poll() is None, "the server process died"
        resent = [
            await _send_until_answered(client, server.url, p, _event(0), failures) for p in probes
        ]
        ready = await client.get(f"{server.url}/readyz")
        assert ready.status_code == 200, ready.text

        assert not failures, f"{len(failures)} bad answers, e.g. {failures[:5]}"
        assert set(statuses) <= {200, 503}, f"statuses seen: {sorted(set(statuses))}"
        assert 503 in statuses, "no request in flight when Redis froze was answered 503"
        assert [a["step"] for a in resent] == [1] * len(probes), resent
        assert any(a["duplicate"] for a in resent), (
            "no re-sent event whose answer was lost came back as a duplicate"
        )

        expected: dict[str, dict[str, int]] = {}
        for entity in entities + probes:
            got = answers.get(entity) or [resent[probes.index(entity)]]
            steps = [a["step"] for a in got]
            assert steps == list(range(1, len(got) + 1)), f"{entity}: steps {steps}"
            assert [a["event_id"] for a in got] == [f"e{k}" for k in range(len(got))]
            latest = await client.get(f"{server.url}/v1/entities/{entity}/risk")
            assert latest.json()["step"] == len(got), latest.text
            expected[entity] = {a["event_id"]: a["step"] for a in got}
    missing = await missing_from_sql(score_log, expected, timeout=20)
    assert not missing, f"{len(missing)} answered scores not in SQL, e.g. {missing[:3]}"
    for entity, events in expected.items():
        assert await logged_steps(score_log, entity) == sorted(
            (step, e) for e, step in events.items()
        ), f"{entity}: SQL holds a score twice or one too many"
    assert not leaks, f"a 503 message exposes an address: {leaks[0]}"


def _count_status(
    statuses: list[int], leaks: list[str] | None = None
) -> Callable[[httpx.Response], Any]:
    """A response hook: the status of every POST, and every 503 naming an address."""

    async def hook(response: httpx.Response) -> None:
        if response.request.method == "POST":
            statuses.append(response.status_code)
        if response.status_code == 503 and leaks is not None:
            await response.aread()
            if "127.0.0.1" in response.text:
                leaks.append(response.text[:300])

    return hook


async def _answered(
    client: httpx.AsyncClient, url: str, entity: str, event: dict[str, Any]
) -> bool:
    try:
        r = await client.post(f"{url}/v1/entities/{entity}/events", json=event)
    except httpx.TimeoutException:
        return False
    return r.status_code == 200


# -- 3. the database stopped for 30 s under load ---------------------------------------------------


async def test_database_stopped_30s_under_load_the_outbox_holds_then_drains(
    own_postgres: PostgresServer,
    own_postgres_log: SqlScoreLog,
    redis_url: str,
    key_prefix: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    launch: Callable[..., ServerProcess],
) -> None:
    server = launch(_env(redis_url, own_postgres.url, key_prefix, tiny_model_dir, tmp_path))
    uid = _uid()
    groups = [[f"db-{uid}-{c}-{j}" for j in range(4)] for c in range(3)]
    answered: dict[str, dict[str, int]] = defaultdict(dict)
    in_order_failures: list[str] = []
    late_answers: list[int] = []
    during_outage = 0
    down = False
    readiness_while_down: list[httpx.Response] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + 42.0
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as client:

        async def steady(entities: list[str]) -> None:
            """One client, a few entities in turn, in time order, at a modest pace."""
            nonlocal during_outage
            i = 0
            while loop.time() < end:
                entity = entities[i % len(entities)]
                i += 1
                k = len(answered[entity])  # an event not answered 200 is sent again, same id
                try:
                    r = await client.post(
                        f"{server.url}/v1/entities/{entity}/events", json=_event(k)
                    )
                except httpx.HTTPError as exc:
                    in_order_failures.append(f"{entity}/e{k}: {exc!r}")
                    continue
                if r.status_code == 200:
                    assert r.json()["step"] == k + 1, r.text
                    answered[entity][f"e{k}"] = k + 1
                    during_outage += down
                else:
                    in_order_failures.append(f"{entity}/e{k}: {r.status_code} {r.text[:200]}")
                await asyncio.sleep(0.05)

        async def late() -> None:
            """Now and then an event earlier than its entity's last: refused on its own (409,
            or 503 while the database cannot say whether it is a duplicate), alone and in a
            bulk request with in-order events of other entities, which are scored all the same."""
            others = [f"db-{uid}-bulk{j}" for j in range(5)]
            j = 0
            while loop.time() < end:
                await asyncio.sleep(0.5)
                entity = groups[j % len(groups)][0]
                event = {"event_id": f"late{j}", "time": T0 - 60, "values": {}}
                j += 1
                if not answered[entity]:
                    continue
                if j % 2:
                    r = await client.post(f"{server.url}/v1/entities/{entity}/events", json=event)
                    late_answers.append(r.status_code)
                    continue
                items = [{"entity_id": entity, **event}] + [
                    {"entity_id": e, **_event(len(answered[e]))} for e in others
                ]
                r = await client.post(f"{server.url}/v1/events", json=items)
                if r.status_code != 200:
                    in_order_failures.append(f"bulk with a late event: {r.status_code} {r.text}")
                    continue
                first, *rest = r.json()["results"]
                late_answers.append(first["status"])
                for item, result in zip(items[1:], rest):
                    if result["status"] == 200:
                        answered[item["entity_id"]][item["event_id"]] = result["step"]
                    else:
                        in_order_failures.append(f"bulk item {item}: {result}")

        async def outage() -> None:
            nonlocal down
            await asyncio.sleep(5.0)
            await asyncio.to_thread(own_postgres.stop, "fast")
            down = True
            try:
                await asyncio.sleep(3.0)
                readiness_while_down.append(await client.get(f"{server.url}/readyz"))
                await asyncio.sleep(27.0)
            finally:
                await asyncio.to_thread(own_postgres.start)
                down = False

        await asyncio.gather(*(steady(g) for g in groups), late(), outage())
        assert server.process.poll() is None, "the server process died"
        ready = await _readyz_until(client, server.url, lambda r: r.status_code == 200, 20)
        assert ready.status_code == 200, ready.text

    total = sum(map(len, answered.values()))
    missing = await missing_from_sql(own_postgres_log, answered, timeout=60)
    assert not missing, (
        f"{len(missing)} of {total} answered scores not in SQL 60 s after the database came "
        f"back, e.g. {missing[:3]}; server log: {server.log_tail(1500)}"
    )
    for entity, events in answered.items():
        assert await logged_steps(own_postgres_log, entity) == sorted(
            (step, e) for e, step in events.items()
        ), f"{entity}: SQL holds a score twice or one too many"
    assert during_outage > 0, "no event was scored while the database was down"
    [down_ready] = readiness_while_down
    assert down_ready.status_code == 503, down_ready.text
    assert down_ready.json()["error"]["field"] == "database", down_ready.text
    assert set(late_answers) <= {409, 503}, f"late events answered {sorted(set(late_answers))}"
    assert not in_order_failures, (
        f"{len(in_order_failures)} in-order events refused while the database was away "
        f"(scoring needs only Redis), e.g. {in_order_failures[:3]}"
    )
    assert "127.0.0.1" not in down_ready.text, "a 503 message exposes an address"


# -- 4. SIGKILL of a worker in the middle of a bulk request --------------------------------------


async def test_sigkill_of_a_worker_mid_bulk_request_loses_and_doubles_nothing(
    redis_url: str,
    database_url: str,
    key_prefix: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    score_log: SqlScoreLog,
    launch: Callable[..., ServerProcess],
) -> None:
    server = launch(_env(redis_url, database_url, key_prefix, tiny_model_dir, tmp_path), workers=2)
    workers = await _workers(server, 2)
    uid = _uid()
    entities = [f"bulk-{uid}-{i}" for i in range(50)]
    per_entity = 40
    items = [{"entity_id": e, **_event(k)} for k in range(per_entity) for e in entities]
    body = orjson.dumps(items)
    version_key = f"{key_prefix}:version"
    redis_client = aioredis.Redis.from_url(redis_url)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        client_port = writer.get_extra_info("sockname")[1]
        head = (
            "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:  # until a fifth of the bulk request is committed
            if int(await redis_client.get(version_key) or 0) >= len(items) // 5 or (
                loop.time() > deadline
            ):
                break
            await asyncio.sleep(0.001)
        serving = serving_pid(workers, server.port, client_port)
        assert serving is not None, f"no worker of {workers} holds the connection"
        os.kill(serving, signal.SIGKILL)
        try:
            answer = await asyncio.wait_for(reader.read(), 30)
        except ConnectionError:
            answer = b""
        writer.close()
        assert not answer.startswith(b"HTTP/1.1 200"), "the bulk request ended before the kill"
    finally:
        await redis_client.aclose()

    async with httpx.AsyncClient(timeout=120) as client:
        resent = await client.post(
            f"{server.url}/v1/events", content=body, headers={"content-type": "application/json"}
        )
        assert resent.status_code == 200, resent.text
        results = resent.json()["results"]
        assert [r["status"] for r in results] == [200] * len(items), resent.text[:500]
        duplicates = sum(r["duplicate"] for r in results)
        assert 0 < duplicates < len(items), f"{duplicates} applied before the kill"
        expected: dict[str, dict[str, int]] = defaultdict(dict)
        for item, result in zip(items, results):
            # the k-th event of its entity has step k + 1, applied before the kill or not
            assert result["step"] == int(item["event_id"][1:]) + 1, (item, result)
            expected[item["entity_id"]][item["event_id"]] = result["step"]
        for entity in entities[:5]:
            latest = await client.get(f"{server.url}/v1/entities/{entity}/risk")
            assert latest.json()["step"] == per_entity, latest.text
    missing = await missing_from_sql(score_log, expected, timeout=20)
    assert not missing, f"{len(missing)} answered scores not in SQL, e.g. {missing[:3]}"
    for entity, events in expected.items():
        assert await logged_steps(score_log, entity) == sorted(
            (step, e) for e, step in events.items()
        ), f"{entity}: SQL holds a score twice or one too many"


async def _workers(server: ServerProcess, count: int) -> list[int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        found = worker_pids(server.pid)
        if len(found) >= count or loop.time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert len(found) == count, f"workers of {server.pid}: {found}"
    return found


# -- 5. poison inputs, then valid traffic -------------------------------------------------------

POISON_TIMES: list[float | str] = [
    1e20,
    -1e12,
    3e11,
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
]


async def test_poison_inputs_are_refused_and_leave_nothing_and_valid_traffic_reaches_sql(
    redis_url: str,
    database_url: str,
    key_prefix: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    score_log: SqlScoreLog,
    launch: Callable[..., ServerProcess],
) -> None:
    server = launch(_env(redis_url, database_url, key_prefix, tiny_model_dir, tmp_path))
    uid = _uid()
    single: list[tuple[str, dict[str, Any], str]] = [
        (f"poison-{uid}-t{i}", {"event_id": "a", "time": t, "values": {}}, "time")
        for i, t in enumerate(POISON_TIMES)
    ]
    single.append(
        (f"poison-{uid}-v", {"event_id": "a", "time": T0, "values": {"HR": 1e308}}, "values.HR")
    )
    bulk = [({**event, "entity_id": f"{entity}-bulk"}, field) for entity, event, field in single]
    bulk.append(
        ({"entity_id": f"ward/bed-{uid}", "event_id": "a", "time": T0, "values": {}}, "entity_id")
    )
    valid_in_bulk: dict[str, Any] = {"entity_id": f"valid-{uid}-inbulk", **_event(0)}
    bulk_nd = [({**item, "entity_id": f"{item['entity_id']}-nd"}, field) for item, field in bulk]
    poisoned = [entity for entity, _, _ in single] + [i["entity_id"] for i, _ in bulk + bulk_nd]

    wrong: list[str] = []
    answered: dict[str, dict[str, int]] = defaultdict(dict)
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as client:
        for entity, event, field in single:
            try:
                r = await client.post(f"{server.url}/v1/entities/{entity}/events", json=event)
            except httpx.HTTPError as exc:  # the server process died on it
                wrong.append(f"single {event}: {exc!r}")
                continue
            if r.status_code != 422 or r.json()["error"]["field"] != field:
                wrong.append(f"single {event}: {r.status_code} {r.text[:150]}")
        for kind, items in (("json", bulk), ("ndjson", bulk_nd)):
            valid = {**valid_in_bulk, "entity_id": f"{valid_in_bulk['entity_id']}-{kind}"}
            lines = [item for item, _ in items] + [valid]
            if kind == "json":
                payload, media = orjson.dumps(lines), "application/json"
            else:
                payload, media = b"\n".join(map(orjson.dumps, lines)), "application/x-ndjson"
            r = await client.post(
                f"{server.url}/v1/events", content=payload, headers={"content-type": media}
            )
            if r.status_code != 200:
                wrong.append(f"bulk {kind}: {r.status_code} {r.text[:150]}")
                continue
            *poison_results, valid_result = r.json()["results"]
            for (item, field), result in zip(items, poison_results):
                if result["status"] != 422 or result["error"]["field"] != field:
                    wrong.append(f"bulk {kind} {item}: {json.dumps(result)[:150]}")
            assert valid_result["status"] == 200, valid_result
            answered[valid["entity_id"]]["e0"] = valid_result["step"]
        assert not wrong, f"{len(wrong)} poison inputs not refused with 422: {wrong}"

        for k in range(3):
            for i in range(8):
                entity = f"valid-{uid}-{i}"
                r = await client.post(f"{server.url}/v1/entities/{entity}/events", json=_event(k))
                assert r.status_code == 200, r.text
                answered[entity][f"e{k}"] = r.json()["step"]
        more: list[dict[str, Any]] = [
            {"entity_id": f"valid-{uid}-b{i}", **_event(0)} for i in range(10)
        ]
        r = await client.post(f"{server.url}/v1/events", json=more)
        assert r.status_code == 200 and r.json()["accepted"] == len(more), r.text
        for item in more:
            answered[item["entity_id"]]["e0"] = 1

        missing = await missing_from_sql(score_log, answered, timeout=5)
        assert not missing, f"{len(missing)} valid scores not in SQL within 5 s: {missing[:3]}"

        watchlist = await client.get(f"{server.url}/v1/watchlist", params={"limit": 1000})
        assert watchlist.status_code == 200, watchlist.text
        feed = await client.get(f"{server.url}/v1/scores", params={"limit": 5000})
        assert feed.status_code == 200, feed.text
        watched = {w["entity_id"] for w in watchlist.json()["entities"]}
        fed = {s["entity_id"] for s in feed.json()["scores"]}
        assert set(answered) <= watched and set(answered) <= fed
        assert not watched & set(poisoned), watched & set(poisoned)
        assert not fed & set(poisoned), fed & set(poisoned)
        for entity in poisoned:
            if "/" not in entity:
                risk = await client.get(f"{server.url}/v1/entities/{entity}/risk")
                assert risk.status_code == 404, f"{entity} has state: {risk.text}"
            assert not await score_log.history(entity, since=None, after_step=None, limit=10)
