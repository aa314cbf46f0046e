"""The service wired to the test Redis, database and model, driven in-process through httpx."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from riskstream.adapters.sql.score_log import SqlScoreLog
from riskstream.bootstrap import create_app
from riskstream.services import Services
from riskstream.settings import Settings


@pytest.fixture
def settings(
    redis_url: str, database_url: str, key_prefix: str, tiny_model_dir: Path, tmp_path: Path
) -> Settings:
    return Settings(
        redis_url=redis_url,
        database_url=database_url,
        key_prefix=key_prefix,
        model_dir=tiny_model_dir,
        data_dir=tmp_path / "data",
        auth=False,  # most tests are not about keys; tests/integration/test_auth*.py are
    )


def server_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment of a real server process (``ServerProcess``) on the test's Redis,
    database, key prefix and model; ``overrides`` by setting name, e.g. STREAM_POLL_S="0.05"."""
    return {
        "REDIS_URL": str(settings.redis_url),
        "DATABASE_URL": str(settings.database_url),
        "KEY_PREFIX": settings.key_prefix,
        "MODEL_DIR": str(settings.model_dir),
        "DATA_DIR": str(settings.data_dir),
        "AUTH": "true" if settings.auth else "false",
        **overrides,
    }


@dataclass
class Running:
    client: httpx.AsyncClient
    services: Services
    app: FastAPI


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[Running]:
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://riskstream") as client:
            yield Running(client, state["services"], app)


async def wait_logged(log: SqlScoreLog, entity_id: str, count: int, timeout: float = 20.0) -> list:
    """The drainer is asynchronous: poll the SQL log until it holds ``count`` scores."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        scores = await log.history(entity_id, since=None, after_step=None, limit=100_000)
        if len(scores) >= count or asyncio.get_running_loop().time() > deadline:
            return scores
        await asyncio.sleep(0.05)


def create_key(database_url: str, *scopes: str) -> str:
    """A new API key with ``scopes`` in the (migrated) database at ``database_url``; its secret.
    For synchronous fixtures; async tests may use ``SqlKeyStore`` on ``sql_engine`` directly."""
    import uuid

    from riskstream.adapters.sql.database import create_engine, migrate
    from riskstream.adapters.sql.keys import SqlKeyStore
    from riskstream.core.keys import new_key

    migrate(database_url)
    made = new_key(f"test-{uuid.uuid4().hex[:12]}", list(scopes))

    async def create() -> None:
        engine = create_engine(database_url)
        try:
            await SqlKeyStore(engine).create(made.key)
        finally:
            await engine.dispose()

    asyncio.run(create())
    return made.secret
