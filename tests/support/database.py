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
    _folder_in_place_of(db_file, keep=None)


def _folder_in_place_of(db_file: Path, keep: Path | None) -> None:
    """The file moved to ``keep`` (or deleted), and a folder where it was; a file a background
    task created again in between is deleted and the folder tried again."""
    if keep is not None:
        db_file.rename(keep)
    for _ in range(1000):
        with contextlib.suppress(FileNotFoundError):
            db_file.unlink()
        try:
            db_file.mkdir()
            return
        except FileExistsError:
            continue
    raise AssertionError(f"could not replace {db_file} with a folder")


class OwnDatabase:
    """A migrated database of one test's own that can be made unreachable (``stop``) and brought
    back (``start``) while a service uses it: on PostgreSQL a database of the test server that
    refuses connections (those open are ended), on SQLite a folder where the file was (the file
    kept aside). A SQLite connection opened before still reaches the file: the service's score
    log must drop its pool (``SqlScoreLog.dispose``) after ``stop``."""

    def __init__(self, url: str, sqlite_file: Path | None) -> None:
        self.url = url
        self.sqlite_file = sqlite_file
        self.name = None if sqlite_file else make_url(url).database

    def _admin(self, sql: str) -> None:
        with psycopg.connect(_libpq(os.environ[SERVER_ENV]), autocommit=True) as admin:
            admin.execute(sql)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.sqlite_file is not None:
            _folder_in_place_of(self.sqlite_file, keep=self.sqlite_file.with_suffix(".away"))
            return
        self._admin(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        self._admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()"
        )

    def start(self) -> None:
        if self.sqlite_file is not None:
            self.sqlite_file.rmdir()
            self.sqlite_file.with_suffix(".away").rename(self.sqlite_file)
            return
        self._admin(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')


@pytest.fixture
def own_database(tmp_path: Path) -> Iterator[OwnDatabase]:
    """A migrated database of this test's own, to make unreachable and bring back."""
    server_url = os.environ.get(SERVER_ENV)
    if server_url:
        with _postgres_database(server_url) as url:
            migrate(url)
            database = OwnDatabase(url, None)
            try:
                yield database
            finally:
                with contextlib.suppress(psycopg.Error):
                    database.start()
    else:
        file = tmp_path / "own.sqlite3"
        url = f"sqlite:///{file}"
        migrate(url)
        yield OwnDatabase(url, file)


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
