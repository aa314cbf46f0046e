"""Pytest plugin: a migrated database for the session, on PostgreSQL if
``RISKSTREAM_TEST_DATABASE_URL`` names a server, else on a SQLite file."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio
from riskstream.adapters.sql.database import create_engine, migrate
from riskstream.adapters.sql.score_log import SqlScoreLog
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

SERVER_ENV = "RISKSTREAM_TEST_DATABASE_URL"


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def _postgres_database(server_url: str) -> Iterator[str]:
    name = f"riskstream_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_libpq(server_url), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq(server_url), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _blank_database(folder: Path) -> Iterator[str]:
    server_url = os.environ.get(SERVER_ENV)
    if server_url:
        with _postgres_database(server_url) as url:
            yield url
    else:
        yield f"sqlite:///{folder / f'{uuid.uuid4().hex}.sqlite3'}"


def make_sqlite_unreachable(db_file: Path) -> None:
    """Put a folder where the SQLite database file is: SQLite can no longer open it. The service's
    background tasks (drain, key usage) may reopen the file between the unlink and the mkdir, so
    that is retried until the folder is in place."""
    for _ in range(1000):
        with contextlib.suppress(FileNotFoundError):
            db_file.unlink()
        try:
            db_file.mkdir()
            return
        except FileExistsError:
            continue
    raise AssertionError(f"could not replace {db_file} with a folder")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _blank_database(tmp_path_factory.mktemp("database")) as url:
        migrate(url)
        yield url


@pytest.fixture
def blank_database_url(tmp_path: Path) -> Iterator[str]:
    """A database of its own with no schema yet, for tests of the migrations themselves."""
    with _blank_database(tmp_path) as url:
        yield url


@pytest_asyncio.fixture
async def sql_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def score_log(sql_engine: AsyncEngine) -> SqlScoreLog:
    return SqlScoreLog(sql_engine)
