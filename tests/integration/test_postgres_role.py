"""docker/postgres/init-riskstream.sh on a real PostgreSQL: the service's role is no superuser,
owns its database, and is enough to migrate it and run the service's own checks."""

from __future__ import annotations

import os
import shutil
import subprocess

import psycopg
import pytest
from riskstream.adapters.sql.database import migrate

from tests.support.paths import PROJECT_ROOT
from tests.support.processes import PostgresServer

pytestmark = pytest.mark.slow
INIT = PROJECT_ROOT / "docker" / "postgres" / "init-riskstream.sh"


def run_init(pg: PostgresServer, **env: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("psql") is None:
        pytest.skip("no psql on this machine")
    environment = {
        **{k: v for k, v in os.environ.items() if k != "RISKSTREAM_DB_PASSWORD"},
        "PGHOST": "127.0.0.1",
        "PGPORT": str(pg.port),
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "postgres",
        **env,
    }
    return subprocess.run(
        ["bash", str(INIT)], env=environment, capture_output=True, text=True, timeout=60
    )


def test_creates_an_unprivileged_role_that_owns_and_migrates_its_database(
    own_postgres: PostgresServer,
) -> None:
    # a password psql must quote (the script never pastes it into SQL itself)
    done = run_init(own_postgres, RISKSTREAM_DB_PASSWORD='it\'s "odd"; DROP ROLE postgres; --')
    assert done.returncode == 0, done.stderr
    admin = f"postgresql://postgres@127.0.0.1:{own_postgres.port}/postgres"
    with psycopg.connect(admin) as conn:
        role = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolcanlogin,"
            " rolpassword IS NOT NULL FROM pg_authid WHERE rolname = 'riskstream'"
        ).fetchone()
        assert role == (False, False, False, False, True, True)
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'riskstream'"
        ).fetchone()
        assert owner == ("riskstream",)
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'postgres'").fetchone()

    url = f"postgresql://riskstream@127.0.0.1:{own_postgres.port}/riskstream"
    migrate(url)  # the service migrates at startup, as this role
    with psycopg.connect(url, autocommit=True) as conn:
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert "alembic_version" in tables and len(tables) > 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE DATABASE not_allowed")


def test_refuses_to_run_without_the_role_password(own_postgres: PostgresServer) -> None:
    done = run_init(own_postgres)
    assert done.returncode != 0
    assert "RISKSTREAM_DB_PASSWORD" in done.stderr
    admin = f"postgresql://postgres@127.0.0.1:{own_postgres.port}/postgres"
    with psycopg.connect(admin) as conn:
        assert (
            conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'riskstream'").fetchone() is None
        )
