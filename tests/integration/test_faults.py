"""Fault drills against real processes: ``riskstream serve`` subprocesses on a redis-server or a
PostgreSQL of the test's own that is restarted empty, frozen, stopped; a worker killed mid-request;
poison inputs. After each, nothing is stuck: every score answered 200 reaches the SQL log exactly
once, and every entity's steps go 1..n with none skipped or doubled.
"""

from __future__ import annotations

import asyncio
import json
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

from app.adapters.sql.database import create_engine
from app.adapters.sql.score_log import SqlScoreLog
from app.bench.server import ServerProcess
from tests.support.drills import (
    logged_steps,
    missing_from_sql,
    server_env,
    serving_pid,
    worker_pids,
)
from tests.support.processes import PostgresServer, RedisServer

pytestmark = pytest.mark.slow

# Event times: in the past (the service refuses times far ahead of its clock), a day per 1440 steps.
T0 = int(time.time()) - 30 * 86_400
CLIENT_TIMEOUT_S = 15.0


def _event(k: int, **extra: Any) -> dict[str, Any]:
    """The k-th event (0-based) of an entity: its id and time say its place in the sequence."""
    return {"event_id": f"e{k}", "time": T0 + 60 * k, "values": {"HR": 60 + k % 40}, **extra}


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
        assert _degraded_by("redis")(ready), f"/readyz does not report the emptied Redis: {ready.text}"
    assert not await missing_from_sql(score_log, before, timeout=1)


# -- 2. Redis frozen (SIGSTOP) for 5 s --------------------------------------------------------------


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
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as client:
        client.event_hooks["response"] = [_count_status(statuses)]
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

        *_, lost = await asyncio.gather(*(steady(e) for e in entities), freeze_and_probe())
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


def _count_status(statuses: list[int]) -> Callable[[httpx.Response], Any]:
    async def hook(response: httpx.Response) -> None:
        if response.request.method == "POST":
            statuses.append(response.status_code)

    return hook


async def _answered(client: httpx.AsyncClient, url: str, entity: str, event: dict[str, Any]) -> bool:
    try:
        r = await client.post(f"{url}/v1/entities/{entity}/events", json=event)
    except httpx.TimeoutException:
        return False
    return r.status_code == 200
