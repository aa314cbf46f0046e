"""``riskstream keys`` as an operator runs it: a subprocess with DATABASE_URL and DATA_DIR."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from riskstream.adapters.sql.database import create_engine
from riskstream.adapters.sql.keys import SqlKeyStore
from riskstream.adapters.sql.tables import api_keys
from riskstream.core.auth import Authenticator
from riskstream.core.errors import Unauthenticated
from riskstream.core.keys import Scope, key_id_of
from sqlalchemy import select

from tests.support.paths import PROJECT_ROOT

Cli = Callable[..., subprocess.CompletedProcess[str]]


def keys_cli(database_url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "riskstream.cli", "keys", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def cli(blank_database_url: str, tmp_path: Path) -> Cli:
    """The CLI on a database with no schema yet: it migrates first, like serve."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return keys_cli(blank_database_url, tmp_path / "data", *args)

    return run


async def _stored_hashes(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return list((await connection.scalars(select(api_keys.c.secret_hash))).all())
    finally:
        await engine.dispose()


def test_create_prints_the_secret_once_as_the_last_line(cli: Cli, blank_database_url: str) -> None:
    created = cli("create", "--name", "ward-7", "--scope", "ingest", "--scope", "read")
    assert created.returncode == 0, created.stderr
    lines = created.stdout.splitlines()
    secret = lines[-1]
    assert key_id_of(secret) is not None
    assert created.stdout.count(secret) == 1
    assert secret not in created.stderr
    assert "ward-7" in created.stderr

    async def check() -> None:
        engine = create_engine(blank_database_url)
        try:
            auth = Authenticator(SqlKeyStore(engine))
            principal = await auth.authenticate(f"Bearer {secret}")
            assert principal.name == "ward-7"
            assert principal.scopes == {Scope.INGEST, Scope.READ}
        finally:
            await engine.dispose()

    asyncio.run(check())


def test_list_shows_keys_but_never_secrets_or_hashes(cli: Cli, blank_database_url: str) -> None:
    secrets_ = []
    for name, scope in [("reader", "read"), ("ops", "admin")]:
        created = cli("create", "--name", name, "--scope", scope)
        assert created.returncode == 0, created.stderr
        secrets_.append(created.stdout.splitlines()[-1])
    assert cli("revoke", "ops").returncode == 0

    table = cli("list")
    as_json = cli("list", "--json")
    assert table.returncode == 0 and as_json.returncode == 0, table.stderr + as_json.stderr
    hashes = asyncio.run(_stored_hashes(blank_database_url))
    assert len(hashes) == 2
    for output in (table.stdout + table.stderr, as_json.stdout + as_json.stderr):
        for secret in secrets_:
            assert secret not in output
            # the random part is the 43 characters after "rsk_<key id>_" (it may itself hold "_")
            assert secret[-43:] not in output
            assert key_id_of(secret) not in output
        for secret_hash in hashes:
            assert secret_hash.rsplit("$", 1)[-1] not in output
        assert "scrypt" not in output

    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "SCOPES", "CREATED", "LAST", "USED", "REVOKED"]
    assert [row.split()[0] for row in rows] == ["reader", "ops"]
    assert rows[0].split()[1:2] == ["read"] and rows[0].split()[-2:] == ["never", "no"]
    assert rows[1].split()[-1] == "yes"

    listed = json.loads(as_json.stdout)
    assert [(k["name"], k["scopes"], k["revoked"]) for k in listed] == [
        ("reader", ["read"], False),
        ("ops", ["admin"], True),
    ]
    assert all(k["created_at"].endswith("Z") and k["last_used_at"] is None for k in listed)
    assert set(listed[0]) == {"name", "scopes", "created_at", "last_used_at", "revoked"}


def test_revoke_stops_the_key_within_the_cache_ttl(cli: Cli, blank_database_url: str) -> None:
    created = cli("create", "--name", "feeder", "--scope", "ingest")
    assert created.returncode == 0, created.stderr
    header = f"Bearer {created.stdout.splitlines()[-1]}"

    async def scenario() -> None:
        engine = create_engine(blank_database_url)
        try:
            auth = Authenticator(SqlKeyStore(engine), cache_s=1.0)
            assert (await auth.require(header, Scope.INGEST)).name == "feeder"
            revoked = await asyncio.to_thread(cli, "revoke", "feeder")
            assert revoked.returncode == 0, revoked.stderr
            deadline = time.monotonic() + 10
            while True:
                try:
                    await auth.authenticate(header)
                except Unauthenticated:
                    return
                assert time.monotonic() < deadline, "the revocation never took effect"
                await asyncio.sleep(0.05)
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_mistakes_are_refused_plainly(cli: Cli) -> None:
    assert cli("create", "--name", "twice", "--scope", "read").returncode == 0
    again = cli("create", "--name", "twice", "--scope", "read")
    assert again.returncode == 1
    assert again.stdout == ""
    assert "'twice' exists" in again.stderr

    unknown_scope = cli("create", "--name", "w", "--scope", "write")
    assert unknown_scope.returncode == 2
    assert "invalid choice: 'write'" in unknown_scope.stderr

    bad_name = cli("create", "--name", "a b", "--scope", "read")
    assert bad_name.returncode == 1
    assert "key name" in bad_name.stderr

    missing = cli("revoke", "nobody")
    assert missing.returncode == 1
    assert "no key named 'nobody'" in missing.stderr
