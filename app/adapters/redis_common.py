from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.core.errors import Unavailable


@contextlib.asynccontextmanager
async def redis_errors() -> AsyncIterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError) as exc:
        raise Unavailable(f"Redis is unreachable: {exc}", field="redis") from exc


@dataclass(frozen=True)
class ViewKeys:
    """Keys of the read side, written by the commit script and read by the views."""

    prefix: str

    @property
    def feed(self) -> str:
        return f"{self.prefix}:feed"

    @property
    def version(self) -> str:
        return f"{self.prefix}:version"

    def watchlist(self, output: str) -> str:
        return f"{self.prefix}:w:{output}"

    def state(self, entity_id: str) -> str:
        return f"{self.prefix}:s:{entity_id}"
