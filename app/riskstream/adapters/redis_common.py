from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from riskstream.adapters.log_limit import warn_limited
from riskstream.core.errors import Unavailable

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def redis_errors() -> AsyncIterator[None]:
    """A Redis that cannot be reached is ``Unavailable`` (503). The client's message names the
    dependency only; the detail (with Redis's address) goes to the log."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError) as exc:
        warn_limited(log, "redis", "Redis is unreachable: %s", exc)
        raise Unavailable("Redis is unreachable", field="redis") from exc


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
