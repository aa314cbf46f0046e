"""Alembic environment.

``migrate()`` passes the URL in ``config.attributes["url"]``; the ``alembic`` command line falls
back to ``sqlalchemy.url`` in alembic.ini, then to the service's settings (``DATABASE_URL``).
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from riskstream.adapters.sql.database import migration_connection, sync_url
from riskstream.adapters.sql.tables import metadata
from riskstream.settings import Settings

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return str(url)
    return Settings().resolved_database_url()


def run_offline() -> None:
    url = sync_url(_url())
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    with migration_connection(_url()) as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
