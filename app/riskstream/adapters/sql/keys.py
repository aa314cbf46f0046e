"""API keys in SQL (the ``KeyStore`` port): the secret's hash and the key's scopes and times.

The authenticator reads one key by id when its cached verdict expires; operators create, list
and revoke through the CLI. A revoked key keeps its row and its name, so audit records naming
it stay unambiguous.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, exc, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from riskstream.adapters.sql.score_log import sql_errors, to_datetime, to_seconds
from riskstream.adapters.sql.tables import api_keys
from riskstream.core.errors import AlreadyExists
from riskstream.core.keys import KeyInfo, StoredKey, stored_scopes


def _scopes(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


class SqlKeyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        table = api_keys
        self._find = select(
            table.c.key_id, table.c.name, table.c.scopes, table.c.secret_hash, table.c.revoked
        ).where(table.c.key_id == bindparam("key_id"))
        # executemany: one statement, one round trip per batch on both drivers
        self._touch = (
            update(table)
            .where(
                table.c.key_id == bindparam("k"),
                or_(table.c.last_used_at.is_(None), table.c.last_used_at < bindparam("t")),
            )
            .values(last_used_at=bindparam("t"))
        )

    async def find(self, key_id: str) -> StoredKey | None:
        async with sql_errors(), self._engine.connect() as connection:
            row = (await connection.execute(self._find, {"key_id": key_id})).first()
        if row is None:
            return None
        return StoredKey(
            key_id=row.key_id,
            name=row.name,
            scopes=stored_scopes(_scopes(row.scopes)),
            secret_hash=row.secret_hash,
            revoked=bool(row.revoked),
        )

    async def touch(self, used: Mapping[str, float]) -> None:
        if not used:
            return
        # A fixed order keeps two workers' batches from deadlocking on each other's rows.
        rows = [{"k": key_id, "t": to_datetime(used[key_id])} for key_id in sorted(used)]
        async with sql_errors(), self._engine.begin() as connection:
            await connection.execute(self._touch, rows)

    async def create(self, key: StoredKey) -> None:
        values = {
            "key_id": key.key_id,
            "name": key.name,
            "scopes": sorted(s.value for s in key.scopes),
            "secret_hash": key.secret_hash,
            "created_at": to_datetime(time.time()),
            "revoked": key.revoked,
        }
        try:
            async with sql_errors(), self._engine.begin() as connection:
                await connection.execute(insert(api_keys).values(**values))
        except exc.IntegrityError as error:
            raise AlreadyExists(
                f"a key named {key.name!r} exists (a revoked key keeps its name)", field="name"
            ) from error

    async def list(self) -> list[KeyInfo]:
        table = api_keys
        query = select(
            table.c.name, table.c.scopes, table.c.created_at, table.c.last_used_at, table.c.revoked
        ).order_by(table.c.created_at, table.c.name)
        async with sql_errors(), self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [
            KeyInfo(
                name=row.name,
                scopes=stored_scopes(_scopes(row.scopes)),
                created_at=to_seconds(row.created_at),
                last_used_at=None if row.last_used_at is None else to_seconds(row.last_used_at),
                revoked=bool(row.revoked),
            )
            for row in rows
        ]

    async def revoke(self, name: str) -> bool:
        table = api_keys
        async with sql_errors(), self._engine.begin() as connection:
            await connection.execute(
                update(table)
                .where(table.c.name == name, table.c.revoked.is_(False))
                .values(revoked=True, revoked_at=to_datetime(time.time()))
            )
            found = await connection.execute(select(table.c.key_id).where(table.c.name == name))
            return found.first() is not None

    async def count(self) -> int:
        async with sql_errors(), self._engine.connect() as connection:
            total = await connection.scalar(select(func.count()).select_from(api_keys))
        return int(total or 0)
