"""The service's own events table as an event table file, for ``riskstream adapt --from-log``.

Every logged event becomes one row: ``entity_id``, ``event_time`` (UTC) and one column per feature
name found in the events' values (``NaN`` where an event did not carry it or sent ``null``), the
format ``riskstream_models`` reads. Rows come sorted by entity, then event time.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import sqlalchemy as sa

from riskstream.adapters.sql.database import sync_url
from riskstream.adapters.sql.tables import events

ENTITY_COLUMN = "entity_id"
TIME_COLUMN = "event_time"


def _utc(t: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; the service writes UTC.
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def _number(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return math.nan
    return float(v)


def export_event_log(database_url: str, path: Path) -> int:
    """Write the events table of ``database_url`` to the Parquet file ``path``; the row count."""
    engine = sa.create_engine(sync_url(database_url))
    try:
        with engine.connect() as connection:
            query = sa.select(events.c.entity_id, events.c.event_time, events.c["values"]).order_by(
                events.c.entity_id, events.c.event_time, events.c.received_at
            )
            rows = connection.execute(query).all()
    finally:
        engine.dispose()
    names = sorted({name for row in rows for name in (row[2] or {})})
    columns: dict[str, object] = {
        ENTITY_COLUMN: pa.array([row[0] for row in rows], pa.string()),
        TIME_COLUMN: pa.array([_utc(row[1]) for row in rows], pa.timestamp("us", tz="UTC")),
    }
    for name in names:
        columns[name] = pa.array([_number((row[2] or {}).get(name)) for row in rows], pa.float64())
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return len(rows)
