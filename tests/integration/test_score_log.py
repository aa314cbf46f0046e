from __future__ import annotations

import asyncio
import contextlib
import math
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from riskstream.adapters.sql.database import (
    alembic_config,
    async_url,
    migrate,
    migration_connection,
    sync_url,
)
from riskstream.adapters.sql.score_log import SqlScoreLog, to_seconds
from riskstream.adapters.sql.tables import events, metadata
from riskstream.core.domain import LoggedScore, Score
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.paths import PROJECT_ROOT

T0 = 1_700_000_000.123456


def entity() -> str:
    return f"entity-{uuid.uuid4().hex}"


def logged(
    entity_id: str,
    step: int,
    *,
    event_id: str | None = None,
    time: float | None = None,
    scored_at: float | None = None,
    values: dict[str, float | None] | None = None,
) -> LoggedScore:
    event_time = T0 + 60.0 * step if time is None else time
    score = Score(
        score_id=uuid.uuid4().hex,
        entity_id=entity_id,
        event_id=event_id or f"event-{step}",
        step=step,
        event_time=event_time,
        scored_at=event_time + 0.5 if scored_at is None else scored_at,
        model_name="aki-lstm",
        model_version="1.0.0",
        risk={"aki_24h": 0.25, "aki_48h": 0.5 + step / 1e4},
    )
    return LoggedScore(score=score, values=values or {"creatinine": 1.1, "urea": None})


async def event_rows(engine: AsyncEngine, entity_id: str) -> list[Any]:
    query = sa.select(events).where(events.c.entity_id == entity_id)
    async with engine.connect() as connection:
        return list((await connection.execute(query)).all())


@pytest.mark.parametrize(
    ("url", "expected_async", "expected_sync"),
    [
        (
            "postgres://u:p@h:5/db",
            "postgresql+psycopg://u:p@h:5/db",
            "postgresql+psycopg://u:p@h:5/db",
        ),
        ("postgresql://h/db", "postgresql+psycopg://h/db", "postgresql+psycopg://h/db"),
        ("postgresql+psycopg://h/db", "postgresql+psycopg://h/db", "postgresql+psycopg://h/db"),
        (
            "sqlite:////data/rs.sqlite3",
            "sqlite+aiosqlite:////data/rs.sqlite3",
            "sqlite:////data/rs.sqlite3",
        ),
    ],
)
def test_urls_map_to_one_driver_per_backend(
    url: str, expected_async: str, expected_sync: str
) -> None:
    assert async_url(url) == expected_async
    assert sync_url(url) == expected_sync


def test_unsupported_url_is_refused() -> None:
    with pytest.raises(ValueError, match="mysql"):
        async_url("mysql://h/db")


async def test_append_is_idempotent(score_log: SqlScoreLog, sql_engine: AsyncEngine) -> None:
    entity_id = entity()
    records = [logged(entity_id, step) for step in (1, 2, 3)]

    assert await score_log.append(records) == 3
    assert await score_log.append(records) == 0
    assert await score_log.append([*records, logged(entity_id, 4)]) == 1
    assert await score_log.append([records[0], records[0]]) == 0

    history = await score_log.history(entity_id, since=None, after_step=None, limit=100)
    assert [s.step for s in history] == [1, 2, 3, 4]
    assert len(await event_rows(sql_engine, entity_id)) == 4


async def test_append_of_nothing(score_log: SqlScoreLog) -> None:
    assert await score_log.append([]) == 0


async def test_many_records_go_in_across_chunks(
    score_log: SqlScoreLog, sql_engine: AsyncEngine
) -> None:
    entity_id = entity()
    records = [logged(entity_id, step) for step in range(1, 2_501)]

    assert await score_log.append(records) == 2_500
    assert await score_log.append([*records[1_200:1_300], logged(entity_id, 2_501)]) == 1

    history = await score_log.history(entity_id, since=None, after_step=None, limit=5_000)
    assert [s.step for s in history] == list(range(1, 2_502))
    assert [s.score_id for s in history[:2_500]] == [r.score.score_id for r in records]
    assert len(await event_rows(sql_engine, entity_id)) == 2_501


async def test_a_cancelled_append_leaves_the_log_writable(score_log: SqlScoreLog) -> None:
    for delay_ms in range(0, 40, 4):
        entity_id = entity()
        task = asyncio.create_task(
            score_log.append([logged(entity_id, step) for step in range(1, 2_001)])
        )
        await asyncio.sleep(delay_ms / 1000)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

        async with asyncio.timeout(10):
            assert await score_log.append([logged(entity_id, 5_000)]) == 1
        stored = await score_log.history(entity_id, since=None, after_step=None, limit=5_000)
        assert len(stored) in (1, 2_001)


async def test_history_orders_filters_and_pages(score_log: SqlScoreLog) -> None:
    entity_id = entity()
    records = [logged(entity_id, step) for step in (5, 2, 9, 1, 7, 3)]
    await score_log.append(records)
    await score_log.append([logged(entity(), 4)])

    async def steps(**kw: Any) -> list[int]:
        options: dict[str, Any] = {"since": None, "after_step": None, "limit": 100} | kw
        return [s.step for s in await score_log.history(entity_id, **options)]

    assert await steps() == [1, 2, 3, 5, 7, 9]
    assert await steps(limit=2) == [1, 2]
    assert await steps(after_step=2, limit=2) == [3, 5]
    assert await steps(after_step=9) == []
    since = datetime.fromtimestamp(T0 + 60.0 * 5, UTC)
    assert await steps(since=since) == [5, 7, 9]
    assert await steps(since=since.astimezone(timezone(timedelta(hours=-5)))) == [5, 7, 9]
    assert await steps(since=since + timedelta(microseconds=1)) == [7, 9]
    assert await steps(since=since, after_step=5, limit=1) == [7]
    assert await score_log.history(entity(), since=None, after_step=None, limit=10) == []


async def test_history_returns_the_scores_as_given(score_log: SqlScoreLog) -> None:
    entity_id = entity()
    record = logged(entity_id, 1)
    await score_log.append([record])

    [score] = await score_log.history(entity_id, since=None, after_step=None, limit=10)
    assert score == record.score
    assert type(score.risk) is dict
    assert all(type(p) is float for p in score.risk.values())


async def test_a_nan_probability_comes_back_as_nan(score_log: SqlScoreLog) -> None:
    entity_id = entity()
    record = logged(entity_id, 1)
    broken = replace(record.score, risk={"aki_24h": math.nan, "aki_48h": 0.5})
    await score_log.append([replace(record, score=broken)])

    found = await score_log.find(entity_id, record.score.event_id)
    assert found is not None
    assert math.isnan(found.risk["aki_24h"])
    assert found.risk["aki_48h"] == 0.5


async def test_find_gives_the_latest_score_of_an_event(score_log: SqlScoreLog) -> None:
    entity_id = entity()
    first = logged(entity_id, 1, event_id="e-1", scored_at=T0 + 1)
    # The same event id scored again after the entity's state was forgotten.
    again = logged(entity_id, 1, event_id="e-1", scored_at=T0 + 2)
    other = logged(entity_id, 2, event_id="e-2")
    await score_log.append([again, first, other])

    assert await score_log.find(entity_id, "e-1") == again.score
    assert await score_log.find(entity_id, "e-2") == other.score
    assert await score_log.find(entity_id, "e-3") is None
    assert await score_log.find(entity(), "e-1") is None


async def test_events_are_stored_as_received(
    score_log: SqlScoreLog, sql_engine: AsyncEngine
) -> None:
    entity_id = entity()
    record = logged(entity_id, 1, values={"creatinine": 1.25, "urea": None, "k": 0.0})
    await score_log.append([record])

    [row] = await event_rows(sql_engine, entity_id)
    assert row.score_id == record.score.score_id
    assert row.event_id == record.score.event_id
    assert row._mapping["values"] == {"creatinine": 1.25, "urea": None, "k": 0.0}
    assert to_seconds(row.event_time) == record.score.event_time
    assert to_seconds(row.received_at) == record.score.scored_at


@pytest.mark.parametrize(
    "moment",
    [0.0, 0.000001, T0, 1_700_000_000.000001, 1_699_999_999.999999, 4_102_444_799.999999],
)
async def test_times_round_trip_to_the_microsecond(score_log: SqlScoreLog, moment: float) -> None:
    entity_id = entity()
    record = logged(entity_id, 1, time=moment, scored_at=moment + 0.000001)
    await score_log.append([record])

    found = await score_log.find(entity_id, record.score.event_id)
    assert found is not None
    assert found.event_time == moment
    assert found.scored_at == moment + 0.000001
    since = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=moment)
    assert await score_log.history(entity_id, since=since, after_step=None, limit=1) == [found]


async def test_ping(score_log: SqlScoreLog) -> None:
    await score_log.ping()


def _head(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def test_migrations_build_exactly_the_tables(database_url: str) -> None:
    with migration_connection(database_url) as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, metadata) == []
        assert context.get_current_revision() == _head(database_url)


def test_migrations_go_down_and_up(blank_database_url: str) -> None:
    migrate(blank_database_url)
    command.downgrade(alembic_config(blank_database_url), "base")
    with migration_connection(blank_database_url) as connection:
        assert set(sa.inspect(connection).get_table_names()) <= {"alembic_version"}
    migrate(blank_database_url)


def test_two_processes_may_migrate_at_once(blank_database_url: str) -> None:
    # They import first and then start together, so the upgrades really overlap.
    script = (
        "import sys, time; from riskstream.adapters.sql.database import migrate; "
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); migrate(sys.argv[1])"
    )
    start = str(time.time() + 5)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, blank_database_url, start],
            cwd=PROJECT_ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    with migration_connection(blank_database_url) as connection:
        context = MigrationContext.configure(connection)
        assert context.get_current_revision() == _head(blank_database_url)
        assert compare_metadata(context, metadata) == []
