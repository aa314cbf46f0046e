"""The score log in SQL: every score the service answered, and the event it came from.

All SQL of the service lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import orjson
from sqlalchemy import (
    JSON,
    DateTime,
    Row,
    Select,
    Table,
    Text,
    TextClause,
    bindparam,
    cast,
    column,
    exc,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.dml import ReturningInsert

from riskstream.adapters.log_limit import warn_limited
from riskstream.adapters.sql.tables import deletions, events, scores
from riskstream.core.domain import LoggedScore, Score
from riskstream.core.errors import Unavailable
from riskstream.core.ports import Observe, ignore

log = logging.getLogger(__name__)

# Rows per INSERT (one JSON text each).
CHUNK_ROWS = 1_000

_Row = Row[*tuple[Any, ...]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_datetime(seconds: float) -> datetime:
    return _EPOCH + timedelta(microseconds=round(seconds * 1_000_000))


def to_seconds(moment: datetime) -> float:
    """Exact to the microsecond; SQLite gives back naive datetimes, which are UTC here."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return ((moment - _EPOCH) // _MICROSECOND) / 1_000_000


def _utc(moment: datetime) -> datetime:
    # SQLite compares the stored text, so the bound value must be UTC too.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


_SCORE_FIELDS = (
    "score_id",
    "entity_id",
    "event_id",
    "step",
    "event_time",
    "scored_at",
    "model_name",
    "model_version",
    "risk",
    "key_name",
)
_EVENT_FIELDS = (
    "score_id",
    "entity_id",
    "event_id",
    "event_time",
    "received_at",
    "values",
    "key_name",
)


def _score_values(record: LoggedScore) -> list[Any]:
    """A scores row in ``_SCORE_FIELDS`` order, times as epoch seconds."""
    score = record.score
    risk = {name: float(p) for name, p in score.risk.items()}
    return [
        score.score_id,
        score.entity_id,
        score.event_id,
        score.step,
        score.event_time,
        score.scored_at,
        score.model_name,
        score.model_version,
        risk,
        record.key_name,
    ]


def _event_values(record: LoggedScore) -> list[Any]:
    """An events row in ``_EVENT_FIELDS`` order; received in the request that scored it."""
    score = record.score
    values = {k: None if v is None else float(v) for k, v in record.values.items()}
    return [
        score.score_id,
        score.entity_id,
        score.event_id,
        score.event_time,
        score.scored_at,
        values,
        record.key_name,
    ]


def sqlite_time(seconds: float) -> str:
    """``to_datetime(seconds)`` as the UTC text SQLAlchemy stores in SQLite."""
    whole, micros = divmod(round(seconds * 1_000_000), 1_000_000)
    t = time.gmtime(whole)
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031 (fastest here)
        t.tm_year,
        t.tm_mon,
        t.tm_mday,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
        micros,
    )


def _recordset_insert(table: Table, fields: Sequence[str]) -> ReturningInsert[str]:
    """PostgreSQL: ``INSERT ... SELECT FROM json_to_recordset(<all rows as one JSON text>)``."""
    columns = [column(name, table.c[name].type) for name in fields]
    batch = (
        func.json_to_recordset(cast(bindparam("rows", type_=Text), JSON))
        .table_valued(*columns)
        .render_derived(name="batch", with_types=True)
    )
    key = table.c.score_id
    return (
        postgresql.insert(table)
        .from_select(list(fields), select(*batch.c))
        .on_conflict_do_nothing(index_elements=[key])
        .returning(key)
    )


def _json_each_insert(table: Table, fields: Sequence[str]) -> TextClause:
    """SQLite: the same with ``json_each`` over an array of rows, each an array of values."""
    picks = ", ".join(
        f"value -> {i}" if isinstance(table.c[name].type, JSON) else f"value ->> {i}"
        for i, name in enumerate(fields)
    )
    columns = ", ".join(f'"{name}"' for name in fields)
    # "WHERE true" keeps SQLite from reading ON CONFLICT as part of the SELECT.
    return text(
        f"INSERT INTO {table.name} ({columns}) SELECT {picks} FROM json_each(:rows) WHERE true "
        "ON CONFLICT (score_id) DO NOTHING RETURNING score_id"
    )


class _InsertNew:
    """Many rows in one INSERT that skips the score_ids already present and returns the others.

    The rows travel as one JSON text that the database unpacks: orjson writes it and the server
    parses it, both in C, and the statement is the same for any number of rows. A multi-row
    VALUES list instead binds every value in Python (SQLAlchemy, the driver): for SQLite that
    cost more than the insert itself, for PostgreSQL 3-4x the whole append.
    """

    def __init__(self, dialect: str, table: Table, fields: Sequence[str]) -> None:
        self._fields = tuple(fields)
        self._times = [i for i, f in enumerate(fields) if isinstance(table.c[f].type, DateTime)]
        self._statement: ReturningInsert[str] | TextClause
        self._time: Callable[[float], object]
        if dialect == "postgresql":  # rows as objects: json_to_recordset reads them by name
            self._statement = _recordset_insert(table, fields)
            self._by_name, self._time = True, to_datetime
        elif dialect == "sqlite":
            self._statement = _json_each_insert(table, fields)
            self._by_name, self._time = False, sqlite_time
        else:
            raise ValueError(f"unsupported database dialect {dialect!r}")

    async def __call__(self, connection: AsyncConnection, rows: list[list[Any]]) -> int:
        """``rows`` in field order, times as epoch seconds."""
        for row in rows:
            for i in self._times:
                row[i] = self._time(row[i])
        payload = [dict(zip(self._fields, row)) for row in rows] if self._by_name else rows
        result = await connection.execute(self._statement, {"rows": orjson.dumps(payload).decode()})
        return len(result.all())


def _score(row: _Row) -> Score:
    return Score(
        score_id=row.score_id,
        entity_id=row.entity_id,
        event_id=row.event_id,
        step=row.step,
        event_time=to_seconds(row.event_time),
        scored_at=to_seconds(row.scored_at),
        model_name=row.model_name,
        model_version=row.model_version,
        # JSON has no NaN: the serializer wrote a NaN probability as null.
        risk={name: math.nan if p is None else float(p) for name, p in row.risk.items()},
    )


_SCORE_COLUMNS = [scores.c[name] for name in _SCORE_FIELDS]

# Entities whose logs are read in one statement by ``stays``.
_STAY_CHUNK = 500


def _stay_query(entity_ids: Sequence[str]) -> Select[*tuple[Any, ...]]:
    return (
        select(*_SCORE_COLUMNS, scores.c.id, events.c["values"])
        .join(events, events.c.score_id == scores.c.score_id)
        .where(scores.c.entity_id.in_(entity_ids))
    )


def _deletions_query(entity_ids: Sequence[str]) -> Select[*tuple[Any, ...]]:
    return (
        select(deletions.c.entity_id, func.max(deletions.c.deleted_at).label("deleted_at"))
        .where(deletions.c.entity_id.in_(entity_ids))
        .group_by(deletions.c.entity_id)
    )


def _current_stay(rows: Sequence[_Row], deleted_at: float | None) -> list[LoggedScore]:
    """The rows of one entity's current stay, as logged scores in step order (see ``stays``)."""
    keyed = [(to_seconds(row.scored_at), row) for row in rows]
    if deleted_at is not None and deleted_at > max(at for at, _ in keyed):
        return []
    firsts = [at for at, row in keyed if row.step == 1]
    begin = max(firsts) if firsts else min(at for at, _ in keyed)
    stay = sorted(((row.step, row.id), row) for at, row in keyed if at >= begin)
    return [LoggedScore(_score(row), row.values or {}, row.key_name) for _, row in stay]


@contextlib.asynccontextmanager
async def sql_errors() -> AsyncIterator[None]:
    """A database that cannot be reached is ``Unavailable`` (503), not an internal error. The
    client's message names the dependency only; the detail (with its address) goes to the log."""
    try:
        yield
    except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, OSError) as error:
        _unreachable(error)
    except exc.DBAPIError as error:
        if error.connection_invalidated:
            _unreachable(error)
        raise


def _unreachable(error: Exception) -> NoReturn:
    # the first line only: SQLAlchemy appends the statement and its parameters (event values)
    warn_limited(log, "database", "the database is unreachable: %s", str(error).split("\n")[0])
    raise Unavailable("the database is unreachable", field="database") from error


class SqlScoreLog:
    def __init__(self, engine: AsyncEngine, observe: Observe = ignore) -> None:
        self._engine = engine
        self._observe = observe
        dialect = engine.dialect.name
        self._insert_scores = _InsertNew(dialect, scores, _SCORE_FIELDS)
        self._insert_events = _InsertNew(dialect, events, _EVENT_FIELDS)

    async def append(self, records: Sequence[LoggedScore]) -> int:
        if not records:
            return 0
        # A write cancelled half way can leave its connection holding SQLite's write lock until
        # the connection is garbage collected, stalling every later write; so the transaction
        # always ends (commit or rollback) before a cancellation goes on.
        work = asyncio.ensure_future(self._append(records))
        started = time.perf_counter()
        try:
            new = await asyncio.shield(work)
            self._observe("append", time.perf_counter() - started)
            return new
        except asyncio.CancelledError:
            await asyncio.wait([work])
            if not work.cancelled():
                work.exception()  # the caller is going away; don't report it as unretrieved
            raise

    async def _append(self, records: Sequence[LoggedScore]) -> int:
        # A fixed key order keeps concurrent drainers from deadlocking on each other's rows.
        ordered = sorted(records, key=lambda record: record.score.score_id)
        new = 0
        async with sql_errors(), self._engine.begin() as connection:
            for start in range(0, len(ordered), CHUNK_ROWS):
                chunk = ordered[start : start + CHUNK_ROWS]
                new += await self._insert_scores(connection, [_score_values(r) for r in chunk])
                await self._insert_events(connection, [_event_values(r) for r in chunk])
        return new

    def _history_query(
        self, entity_id: str, since: datetime | None, after_step: int | None, limit: int
    ) -> Select[*tuple[Any, ...]]:
        query = select(*_SCORE_COLUMNS).where(scores.c.entity_id == entity_id)
        if since is not None:
            query = query.where(scores.c.event_time >= _utc(since))
        if after_step is not None:
            query = query.where(scores.c.step > after_step)
        return query.order_by(scores.c.step, scores.c.id).limit(limit)

    async def history(
        self, entity_id: str, *, since: datetime | None, after_step: int | None, limit: int
    ) -> list[Score]:
        query = self._history_query(entity_id, since, after_step, limit)
        return [_score(row) for row in await self._fetch(query)]

    async def history_with_values(
        self, entity_id: str, *, since: datetime | None, after_step: int | None, limit: int
    ) -> list[LoggedScore]:
        """The same page as ``history``, each score with the event values it came from."""
        query = (
            self._history_query(entity_id, since, after_step, limit)
            .add_columns(events.c["values"])
            .outerjoin(events, events.c.score_id == scores.c.score_id)
        )
        return [LoggedScore(_score(row), row.values or {}) for row in await self._fetch(query)]

    async def record_deletion(self, key_name: str | None, entity_id: str) -> None:
        """The audit row of a DELETE (the ``AuditLog`` port), committed before it returns."""
        row = {"key_name": key_name, "entity_id": entity_id, "deleted_at": datetime.now(UTC)}
        async with sql_errors(), self._engine.begin() as connection:
            await connection.execute(deletions.insert().values(**row))

    async def find(self, entity_id: str, event_id: str) -> Score | None:
        query = (
            select(*_SCORE_COLUMNS)
            .where(scores.c.entity_id == entity_id, scores.c.event_id == event_id)
            .order_by(scores.c.scored_at.desc(), scores.c.id.desc())
            .limit(1)
        )
        rows = await self._fetch(query)
        return _score(rows[0]) if rows else None

    async def dispose(self) -> None:
        """Close every pooled connection; the next query connects afresh. After the database
        moved (a failover, a restored SQLite file), connections opened before would still reach
        the old one."""
        await self._engine.dispose()

    # -- the event log read back (the ``EventLog`` port, for replay) --------------------------

    async def stays(self, entity_ids: Sequence[str]) -> dict[str, list[LoggedScore]]:
        """Each entity's current stay in step order: its scores from the latest one at step 1
        (by the time it was scored) on, with the events' values. None if the entity's latest
        DELETE (the ``deletions`` audit) came after its latest score: the next event starts a
        new stay. Times compared are the scoring and deleting processes' clocks."""
        stays: dict[str, list[LoggedScore]] = {}
        distinct = list(dict.fromkeys(entity_ids))
        started = time.perf_counter()
        async with sql_errors(), self._engine.connect() as connection:
            for start in range(0, len(distinct), _STAY_CHUNK):
                chunk = distinct[start : start + _STAY_CHUNK]
                rows = (await connection.execute(_stay_query(chunk))).all()
                logged = sorted({row.entity_id for row in rows})
                # a new entity (the common case on a first event) costs the one query only
                deleted = {
                    row.entity_id: to_seconds(row.deleted_at)
                    for row in (
                        await connection.execute(_deletions_query(logged)) if logged else ()
                    )
                }
                by_entity: dict[str, list[_Row]] = {}
                for row in rows:
                    by_entity.setdefault(row.entity_id, []).append(row)
                for entity_id, found in by_entity.items():
                    stay = _current_stay(found, deleted.get(entity_id))
                    if stay:
                        stays[entity_id] = stay
        self._observe("stays", time.perf_counter() - started)
        return stays

    async def entity_ids(self, *, after: str | None, limit: int) -> list[str]:
        query = select(scores.c.entity_id).distinct().order_by(scores.c.entity_id).limit(limit)
        if after is not None:
            query = query.where(scores.c.entity_id > after)
        return [row.entity_id for row in await self._fetch(query)]

    async def ping(self) -> None:
        async with sql_errors(), self._engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def _fetch(self, query: Select[*tuple[Any, ...]]) -> Sequence[_Row]:
        async with sql_errors(), self._engine.connect() as connection:
            return (await connection.execute(query)).all()
