"""Several real server processes sharing one Redis and one database; crashes and restarts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from riskstream.adapters.sql.score_log import SqlScoreLog
from riskstream.settings import Settings

from tests.support.server import ServerProcess
from tests.support.service import server_env as env_of
from tests.support.service import wait_logged

pytestmark = pytest.mark.slow
T0 = 1_790_000_000


@pytest.fixture
def server_env(settings: Settings) -> dict[str, str]:
    return env_of(settings, OUTBOX_CLAIM_IDLE_MS="500")


@pytest.fixture
def servers(server_env: dict[str, str], tmp_path: Path) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


async def test_concurrent_posts_through_two_processes_step_exactly_once_each(
    servers: list[ServerProcess], server_env: dict[str, str], tmp_path: Path, score_log: SqlScoreLog
) -> None:
    servers += [ServerProcess(server_env, tmp_path / f"server{i}.log") for i in range(2)]
    entity = f"p-{uuid.uuid4().hex[:8]}"
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def send(i: int) -> httpx.Response:
            server = servers[i % 2]
            return await client.post(
                f"{server.url}/v1/entities/{entity}/events",
                json={"event_id": f"e{i}", "time": T0, "values": {"HR": 60 + i % 50}},
            )

        responses = await asyncio.gather(*(send(i) for i in range(200)))
        assert [r.status_code for r in responses] == [200] * 200
        steps = sorted(r.json()["step"] for r in responses)
        assert steps == list(range(1, 201))
        latest = (await client.get(f"{servers[0].url}/v1/entities/{entity}/risk")).json()
        assert latest["step"] == 200
    logged = await wait_logged(score_log, entity, 200)
    assert len(logged) == 200
    assert len({s.event_id for s in logged}) == 200 and [s.step for s in logged] == steps


async def test_a_killed_server_loses_no_answered_score_and_state_survives_restart(
    servers: list[ServerProcess], server_env: dict[str, str], tmp_path: Path, score_log: SqlScoreLog
) -> None:
    # A slow drainer start would hide nothing here: the kill comes right after the answers.
    first = ServerProcess(server_env, tmp_path / "first.log")
    entity = f"p-{uuid.uuid4().hex[:8]}"
    answered = []
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(50):
            r = await client.post(
                f"{first.url}/v1/entities/{entity}/events",
                json={
                    "event_id": f"e{i}",
                    "time": T0 + 3600 * i,
                    "values": {"Creatinine": 1 + i / 50},
                },
            )
            assert r.status_code == 200
            answered.append(r.json())
    first.kill()

    second = ServerProcess(server_env, tmp_path / "second.log")
    servers.append(second)
    logged = await wait_logged(score_log, entity, 50)
    assert {s.event_id: s.risk for s in logged} == {a["event_id"]: a["risk"] for a in answered}
    async with httpx.AsyncClient(timeout=30) as client:
        latest = (await client.get(f"{second.url}/v1/entities/{entity}/risk")).json()
        assert latest["step"] == 50 and latest["risk"] == answered[-1]["risk"]
        r = await client.post(
            f"{second.url}/v1/entities/{entity}/events",
            json={"event_id": "e50", "time": T0 + 3600 * 50, "values": {}},
        )
        assert r.json()["step"] == 51
