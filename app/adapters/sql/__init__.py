"""The SQL side: the score log on PostgreSQL or SQLite, with Alembic migrations."""

from app.adapters.sql.database import async_url, create_engine, migrate, sync_url
from app.adapters.sql.score_log import SqlScoreLog

__all__ = ["SqlScoreLog", "async_url", "create_engine", "migrate", "sync_url"]
