"""The SQL side: the score log on PostgreSQL or SQLite, with Alembic migrations."""

from riskstream.adapters.sql.database import async_url, create_engine, migrate, sync_url
from riskstream.adapters.sql.score_log import SqlScoreLog

__all__ = ["SqlScoreLog", "async_url", "create_engine", "migrate", "sync_url"]
