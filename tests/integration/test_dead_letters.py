"""Records the database refuses, next to valid ones, in the real outbox: the valid ones land,
the bad ones wait in the dead-letter stream, readiness and the metrics say so, and the
``riskstream dead-letters`` command lists and replays them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from app.adapters.codec import encode_logged
from app.adapters.embedded_redis import EmbeddedRedis
from app.adapters.redis_outbox import RedisOutbox
from app.adapters.sql.score_log import SqlScoreLog
from app.bench.server import PROJECT_ROOT
from app.core.domain import LoggedScore, Score
from app.core.drain import drain_once
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
    for payload in payloads:
        await client.xadd(f"{prefix}:outbox", {"d": payload})


async def wait_dead_letters(client: aioredis.Redis, prefix: str, count: int) -> list:
    for _ in range(400):
        letters = await client.xrange(f"{prefix}:deadletter")
        if len(letters) >= count:
            return letters
        await asyncio.sleep(0.05)
    return letters


async def test_refused_records_go_to_the_dead_letters_and_the_valid_ones_land(
    service: Running, redis_client: aioredis.Redis, key_prefix: str, score_log: SqlScoreLog
) -> None:
    """Before: the batch holding a refused record was retried forever; none of it reached SQL."""
    postgres = score_log._engine.dialect.name == "postgresql"
    valid = [logged("dl-ok", n) for n in range(1, 6)]
    bad = [encode_logged(BAD_TIME), b'{"not": "a score"}', encode_logged(LONG_ID)]
    await put(redis_client, key_prefix, *map(encode_logged, valid[:2]), *bad)
    await put(redis_client, key_prefix, *map(encode_logged, valid[2:]))

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


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "dead-letters", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def cli_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATA_DIR", "KEY_PREFIX")}
    return {**env, **settings}


async def make_dead_letters(client: aioredis.Redis, prefix: str, log: SqlScoreLog) -> None:
    """Two refused records (as the drain leaves them) and one that lands."""
    outbox = RedisOutbox(client, prefix=prefix, claim_idle_ms=60_000)
    await put(client, prefix, encode_logged(BAD_TIME), encode_logged(logged("cli-ok", 1)))
    await put(client, prefix, b"\xff not json")
    while await drain_once(outbox, log, limit=100):
        pass


async def test_the_cli_lists_and_replays_dead_letters(
    redis_client: aioredis.Redis, redis_url: str, key_prefix: str, score_log: SqlScoreLog
) -> None:
    await make_dead_letters(redis_client, key_prefix, score_log)
    env = cli_env(REDIS_URL=redis_url, KEY_PREFIX=key_prefix)

    listed = cli(env, "list")
    assert listed.returncode == 0, listed.stderr
    letters = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert [(x["entity_id"], x["event_id"]) for x in letters] == [("dl-time", "e3"), (None, None)]
    for letter in letters:
        assert set(letter) >= {"id", "entity_id", "event_id", "error", "time"}
        assert letter["error"] and letter["time"].endswith("Z")

    assert cli(env, "replay", "--id", "nonsense").returncode == 2
    one = cli(env, "replay", "--id", letters[1]["id"])
    assert one.returncode == 0 and one.stdout.startswith("1 "), one.stderr
    assert await redis_client.xlen(f"{key_prefix}:outbox") == 1
    assert await redis_client.xlen(f"{key_prefix}:deadletter") == 1
    rest = cli(env, "replay")
    assert rest.returncode == 0 and rest.stdout.startswith("1 "), rest.stderr
    outbox = await redis_client.xrange(f"{key_prefix}:outbox")
    assert [f[b"d"] for _, f in outbox] == [b"\xff not json", encode_logged(BAD_TIME)]
    assert cli(env, "list").stdout == ""
    assert cli(env, "replay").stdout.startswith("0 ")


async def test_the_cli_finds_the_embedded_redis_in_data_dir(
    tmp_path: Path, score_log: SqlScoreLog
) -> None:
    """With no REDIS_URL the command uses the embedded server in DATA_DIR, as ``serve`` does."""
    embedded = EmbeddedRedis(tmp_path / "data" / "redis")
    client = aioredis.Redis.from_url(embedded.start())
    try:
        await make_dead_letters(client, "rs", score_log)
        listed = cli(cli_env(DATA_DIR=str(tmp_path / "data")), "list")
        assert listed.returncode == 0, listed.stderr
        assert len(listed.stdout.splitlines()) == 2
        assert await client.xlen("rs:deadletter") == 2  # the server is still there
    finally:
        await client.aclose()
        embedded.stop()
