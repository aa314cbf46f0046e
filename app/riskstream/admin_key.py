"""The first start's admin key: secure by default, yet the README's two commands still work.

With no key in the database, ``riskstream serve`` creates a key named ``admin`` with every
scope and writes its secret to ``DATA_DIR/admin.key``, readable by the owner only. Workers or
processes starting together race on the key's unique name: one creates it, the others find
the name taken and create nothing. The secret is written first to a private staging file and
moved into place only by the winner, so ``admin.key`` never holds a secret that is not stored
(and is never, even briefly, readable by others).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

from riskstream.core.errors import AlreadyExists
from riskstream.core.keys import Scope, new_key
from riskstream.core.ports import KeyStore

ADMIN_NAME = "admin"
ADMIN_KEY_FILE = "admin.key"


async def create_admin_key(keys: KeyStore, data_dir: Path) -> Path | None:
    """The path of the new key's file if this call created the admin key; None if there
    already are keys (or another process just created it). Log the path, never the secret."""
    if await keys.count() > 0:
        return None
    made = new_key(ADMIN_NAME, [scope.value for scope in Scope])
    staging = _stage(data_dir, made.secret)
    try:
        await keys.create(made.key)
    except BaseException as error:
        staging.unlink(missing_ok=True)
        if isinstance(error, AlreadyExists):
            return None
        raise
    final = data_dir / ADMIN_KEY_FILE
    os.replace(staging, final)
    _sync_folder(data_dir)
    return final


def ensure_admin_key(database_url: str, data_dir: Path) -> Path | None:
    """``create_admin_key`` for a synchronous caller (``riskstream serve`` before it starts
    the workers); the database must be migrated."""
    from riskstream.adapters.sql.database import create_engine
    from riskstream.adapters.sql.keys import SqlKeyStore

    async def run() -> Path | None:
        engine = create_engine(database_url)
        try:
            return await create_admin_key(SqlKeyStore(engine), data_dir)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _stage(data_dir: Path, secret: str) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = data_dir / f".{ADMIN_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    write_private(staging, secret + "\n")
    return staging


def write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 from the start (O_EXCL: never an existing file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
