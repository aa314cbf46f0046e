"""API keys in the real database: the store, the authenticator on it, the first-start admin key."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from riskstream.adapters.sql.database import create_engine, migrate
from riskstream.adapters.sql.keys import SqlKeyStore
from riskstream.adapters.sql.tables import api_keys
from riskstream.admin_key import ADMIN_KEY_FILE, create_admin_key
from riskstream.core.auth import Authenticator
from riskstream.core.errors import AlreadyExists, Unauthenticated
from riskstream.core.keys import Scope, key_id_of, new_key
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.paths import PROJECT_ROOT


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def keys(sql_engine: AsyncEngine) -> SqlKeyStore:
    return SqlKeyStore(sql_engine)


@pytest.fixture
async def empty_keys(blank_database_url: str) -> AsyncIterator[SqlKeyStore]:
    """A database of its own, so the key table starts empty."""
    migrate(blank_database_url)
    engine = create_engine(blank_database_url)
    try:
        yield SqlKeyStore(engine)
    finally:
        await engine.dispose()


async def test_create_find_list_revoke(keys: SqlKeyStore, sql_engine: AsyncEngine) -> None:
    name = unique("reader")
    made = new_key(name, ["read", "ingest"])
    before = time.time()
    await keys.create(made.key)

    found = await keys.find(made.key.key_id)
    assert found == made.key
    assert found.scopes == {Scope.READ, Scope.INGEST}
    assert await keys.find("0123456789abcdef") is None

    # the secret is stored nowhere, only its hash
    async with sql_engine.connect() as connection:
        rows = (await connection.execute(select(api_keys))).all()
    assert rows
    assert all(made.secret not in str(tuple(row)) for row in rows)
    assert made.secret[-43:] not in str(rows)  # its random part (which may itself hold "_")

    listed = {key.name: key for key in await keys.list()}
    info = listed[name]
    assert info.scopes == {Scope.READ, Scope.INGEST}
    assert before - 1 <= info.created_at <= time.time() + 1
    assert info.last_used_at is None
    assert not info.revoked

    assert await keys.revoke(name)
    assert await keys.revoke(name)  # again: not an error
    assert not await keys.revoke(unique("nobody"))
    revoked = await keys.find(made.key.key_id)
    assert revoked is not None and revoked.revoked
    assert {key.name: key for key in await keys.list()}[name].revoked


async def test_names_are_unique_even_after_a_revocation(keys: SqlKeyStore) -> None:
    name = unique("dup")
    await keys.create(new_key(name, ["read"]).key)
    with pytest.raises(AlreadyExists, match="exists") as caught:
        await keys.create(new_key(name, ["admin"]).key)
    assert caught.value.status == 409
    await keys.revoke(name)
    with pytest.raises(AlreadyExists):
        await keys.create(new_key(name, ["read"]).key)


async def test_touch_records_the_latest_use_and_never_goes_back(keys: SqlKeyStore) -> None:
    a, b = new_key(unique("a"), ["read"]), new_key(unique("b"), ["read"])
    await keys.create(a.key)
    await keys.create(b.key)
    t = 1_790_000_000.25
    await keys.touch({a.key.key_id: t, b.key.key_id: t + 5})
    await keys.touch({a.key.key_id: t - 100})  # a late, older batch from another worker
    await keys.touch({})
    listed = {key.name: key for key in await keys.list()}
    assert listed[a.key.name].last_used_at == t
    assert listed[b.key.name].last_used_at == t + 5


async def test_count(empty_keys: SqlKeyStore) -> None:
    assert await empty_keys.count() == 0
    await empty_keys.create(new_key("one", ["read"]).key)
    assert await empty_keys.count() == 1


async def test_the_authenticator_on_sql_sees_a_revocation_within_its_ttl(
    keys: SqlKeyStore,
) -> None:
    made = new_key(unique("ingester"), ["ingest"])
    await keys.create(made.key)
    auth = Authenticator(keys, cache_s=0.5)
    header = f"Bearer {made.secret}"
    assert (await auth.require(header, Scope.INGEST)).name == made.key.name
    await auth.flush_usage()
    used = {key.name: key for key in await keys.list()}[made.key.name].last_used_at
    assert used is not None and abs(used - time.time()) < 60

    # another process (the CLI) revokes it through its own store
    await keys.revoke(made.key.name)
    deadline = time.monotonic() + 10
    while True:
        try:
            await auth.authenticate(header)
        except Unauthenticated:
            break
        assert time.monotonic() < deadline, "the revocation never took effect"
        await asyncio.sleep(0.05)


async def test_the_first_start_creates_one_admin_key(
    empty_keys: SqlKeyStore, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    path = await create_admin_key(empty_keys, data_dir)
    assert path == data_dir / ADMIN_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert key_id_of(secret) is not None
    assert sorted(p.name for p in data_dir.iterdir()) == [ADMIN_KEY_FILE]  # no staging left

    principal = await Authenticator(empty_keys).require(f"Bearer {secret}", Scope.ADMIN)
    assert principal.name == "admin"
    assert principal.scopes == set(Scope)

    # a second start (keys exist) creates nothing and leaves the file alone
    assert await create_admin_key(empty_keys, data_dir) is None
    assert path.read_text().strip() == secret
    assert [key.name for key in await empty_keys.list()] == ["admin"]


async def test_no_admin_key_when_keys_exist(empty_keys: SqlKeyStore, tmp_path: Path) -> None:
    await empty_keys.create(new_key("ops", ["admin"]).key)
    assert await create_admin_key(empty_keys, tmp_path) is None
    assert not (tmp_path / ADMIN_KEY_FILE).exists()


def test_processes_starting_together_create_one_admin_key(
    blank_database_url: str, tmp_path: Path
) -> None:
    migrate(blank_database_url)
    data_dir = tmp_path / "data"
    # They import first and then start together, so the creations really overlap. With umask 0
    # a file created with the default mode would be world-readable.
    script = (
        "import os, sys, time; from pathlib import Path; "
        "from riskstream.admin_key import ensure_admin_key; os.umask(0); "
        "time.sleep(max(0.0, float(sys.argv[3]) - time.time())); "
        "print(ensure_admin_key(sys.argv[1], Path(sys.argv[2])))"
    )
    start = str(time.time() + 5)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, blank_database_url, str(data_dir), start],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        outputs.append(stdout.strip())
    assert sorted(outputs) == sorted(["None", "None", str(data_dir / ADMIN_KEY_FILE)])
    assert sorted(p.name for p in data_dir.iterdir()) == [ADMIN_KEY_FILE]
    assert stat.S_IMODE((data_dir / ADMIN_KEY_FILE).stat().st_mode) == 0o600
    secret = (data_dir / ADMIN_KEY_FILE).read_text().strip()

    async def check() -> None:
        engine = create_engine(blank_database_url)
        try:
            store = SqlKeyStore(engine)
            assert [key.name for key in await store.list()] == ["admin"]
            assert (await Authenticator(store).authenticate(f"Bearer {secret}")).name == "admin"
        finally:
            await engine.dispose()

    asyncio.run(check())


class _RacingStore(SqlKeyStore):
    """Saw the table empty just before another process created the admin key."""

    async def count(self) -> int:
        return 0


async def test_losing_the_race_for_the_admin_key_creates_nothing(
    empty_keys: SqlKeyStore, blank_database_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    winner = await create_admin_key(empty_keys, data_dir)
    assert winner is not None
    secret = winner.read_text()
    engine = create_engine(blank_database_url)
    try:
        assert await create_admin_key(_RacingStore(engine), data_dir) is None
    finally:
        await engine.dispose()
    assert winner.read_text() == secret  # the winner's file stands
    assert sorted(p.name for p in data_dir.iterdir()) == [ADMIN_KEY_FILE]
