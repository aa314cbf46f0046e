"""The startup wait's schedule: exponential backoff, capped, cut at the deadline; what it
retries and what it does not (a real dependency's wait: tests/integration/test_startup_retry.py)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import redis
from riskstream.startup import DependencyUnavailable, backoff, wait_for, where


class Clock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def failing(times: int, error: BaseException) -> tuple[list[int], Callable[[], None]]:
    calls: list[int] = []

    def probe() -> None:
        calls.append(1)
        if len(calls) <= times:
            raise error

    return calls, probe


def test_backoff_doubles_up_to_the_cap() -> None:
    assert list(itertools.islice(backoff(0.1, 1.0), 7)) == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


def test_waits_with_growing_pauses_until_the_probe_succeeds() -> None:
    clock = Clock()
    calls, probe = failing(4, redis.ConnectionError("refused"))
    failures = wait_for("Redis", probe, timeout_s=60, sleep=clock.sleep, clock=clock)
    assert failures == 4 and len(calls) == 5
    assert clock.sleeps == [0.1, 0.2, 0.4, 0.8]


def test_redis_loading_its_append_only_file_is_waited_for() -> None:
    clock = Clock()
    calls, probe = failing(2, redis.BusyLoadingError("LOADING Redis is loading the dataset"))
    assert wait_for("Redis", probe, timeout_s=60, sleep=clock.sleep, clock=clock) == 2
    assert len(calls) == 3


def test_gives_up_at_the_deadline_naming_the_dependency_and_the_setting() -> None:
    clock = Clock()
    calls, probe = failing(10**6, redis.TimeoutError("timed out"))
    with pytest.raises(DependencyUnavailable) as raised:
        wait_for("Redis at r:6379", probe, timeout_s=20, sleep=clock.sleep, clock=clock)
    message = str(raised.value)
    assert message.startswith("Redis at r:6379 still unreachable after 20 s (STARTUP_TIMEOUT_S)")
    assert "TimeoutError: timed out" in message
    assert sum(clock.sleeps) == pytest.approx(20)  # the last pause is cut to the deadline
    assert max(clock.sleeps) == 5.0  # the cap
    assert len(calls) == len(clock.sleeps) + 1


def test_zero_timeout_tries_once() -> None:
    clock = Clock()
    calls, probe = failing(1, redis.ConnectionError("refused"))
    with pytest.raises(DependencyUnavailable):
        wait_for("Redis", probe, timeout_s=0, sleep=clock.sleep, clock=clock)
    assert len(calls) == 1 and clock.sleeps == []


def test_an_error_that_is_not_about_reachability_is_not_retried() -> None:
    clock = Clock()
    calls, probe = failing(1, ValueError("unsupported database URL scheme"))
    with pytest.raises(ValueError):
        wait_for("the database", probe, timeout_s=60, sleep=clock.sleep, clock=clock)
    assert len(calls) == 1


def test_the_log_names_host_and_port_never_credentials() -> None:
    assert where("postgresql://riskstream:s3cret@postgres:5432/riskstream") == "postgres:5432"
    assert where("redis://:pw@redis/0") == "redis"
