"""Engines and migrations for PostgreSQL (production) and SQLite (the embedded default)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from riskstream.resources import resource

MIGRATIONS_DIR = resource("migrations")
BUSY_TIMEOUT_S = 30.0
# Any constant works; it only has to be the same in every process migrating this database.
_MIGRATION_LOCK_KEY = 0x7269736B73747265  # "riskstre"

_POSTGRES = {"postgresql", "postgres", "postgresql+psycopg"}
_SQLITE = {"sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"}


def _with_driver(url: str, sqlite_driver: str) -> URL:
    parsed = make_url(url)
    if parsed.drivername in _POSTGRES:
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername in _SQLITE:
        return parsed.set(drivername=sqlite_driver)
    raise ValueError(
        f"unsupported database URL scheme {parsed.drivername!r}: use postgresql or sqlite"
    )


def async_url(url: str) -> str:
    return _with_driver(url, "sqlite+aiosqlite").render_as_string(hide_password=False)


def sync_url(url: str) -> str:
    return _with_driver(url, "sqlite").render_as_string(hide_password=False)


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None
    return Path(database)


def _prepare_sqlite_file(url: URL) -> None:
    path = _sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(url: str) -> AsyncEngine:
    parsed = make_url(async_url(url))
    # hide_parameters: a database error's message (which reaches the log, and dead letters)
    # would otherwise carry the statement's parameters: the events' feature values.
    common: dict[str, Any] = {
        "json_serializer": _dumps,
        "json_deserializer": orjson.loads,
        "hide_parameters": True,
    }
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite_file(parsed)
        engine = create_async_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_S}, **common)
        event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
        return engine
    return create_async_engine(
        parsed, pool_size=5, max_overflow=10, pool_pre_ping=True, pool_recycle=1800, **common
    )


def _sync_engine(url: str) -> Engine:
    parsed = make_url(sync_url(url))
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, poolclass=sa.NullPool)
    _prepare_sqlite_file(parsed)
    engine = sa.create_engine(
        parsed, poolclass=sa.NullPool, connect_args={"timeout": BUSY_TIMEOUT_S}
    )

    # pysqlite would otherwise open transactions lazily and never before DDL; take the write lock
    # up front so concurrent migrators queue on busy_timeout instead of racing.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        _set_sqlite_pragmas(dbapi_connection, record)

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@contextmanager
def migration_connection(url: str) -> Iterator[Connection]:
    """A connection in a transaction that holds the database's migration lock until it commits."""
    engine = _sync_engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            yield connection
    finally:
        engine.dispose()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url
    return config


def migrate(url: str) -> None:
    command.upgrade(alembic_config(url), "head")
