"""``riskstream serve`` started before its Redis and PostgreSQL: it waits for them with backoff,
logging each wait, and is ready once they are up; it gives up only after STARTUP_TIMEOUT_S."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.model import TINY_MODEL_DIR
from tests.support.processes import PostgresServer, RedisServer
from tests.support.server import ServerProcess, free_port

pytestmark = pytest.mark.slow


def wait_for_text(path: Path, text: str, *, after: int = 0, timeout: float = 60.0) -> int:
    """Poll ``path`` until ``text`` appears past offset ``after``; where it was found."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text(errors="replace") if path.exists() else ""
        found = content.find(text, after)
        if found >= 0:
            return found
        time.sleep(0.05)
    tail = path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"
    raise AssertionError(f"{text!r} not in {path.name} within {timeout}s: {tail}")


class Starting:
    """A ``ServerProcess`` constructed in a thread (the constructor returns once /readyz is
    200), so the test can watch its log and bring its dependencies up meanwhile."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.server: ServerProcess | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(env, log), daemon=True)
        self.thread.start()

    def _run(self, env: dict[str, str], log: Path) -> None:
        try:
            self.server = ServerProcess(env, log, timeout=180)
        except BaseException as exc:
            self.error = exc

    def ready(self, timeout: float) -> ServerProcess:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the server was not ready in time"
        if self.error is not None:
            raise self.error
        assert self.server is not None
        return self.server


@pytest.fixture
def late_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "late-redis", start=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def late_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(start=False)
    try:
        yield server
    finally:
        server.destroy()


def test_serve_waits_for_redis_and_postgres_then_becomes_ready(
    late_redis: RedisServer, late_postgres: PostgresServer, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    env = {
        "REDIS_URL": late_redis.url,
        "DATABASE_URL": late_postgres.url,
        "MODEL_DIR": str(TINY_MODEL_DIR),
        "DATA_DIR": str(tmp_path / "data"),
        "STARTUP_TIMEOUT_S": "120",
    }
    starting = Starting(env, log)
    try:
        # Nothing listens yet: it keeps retrying Redis, with growing pauses.
        first = wait_for_text(log, f"waiting for Redis at 127.0.0.1:{late_redis.port}")
        third = wait_for_text(log, "attempt 3:", after=first)
        assert starting.server is None and starting.error is None
        late_redis.start()
        up = wait_for_text(log, f"Redis at 127.0.0.1:{late_redis.port} is up", after=third)

        # Then PostgreSQL, which is still down.
        waiting = wait_for_text(log, f"waiting for the database at 127.0.0.1:{late_postgres.port}")
        assert waiting > up
        wait_for_text(log, "attempt 2:", after=waiting)
        assert starting.server is None and starting.error is None
        late_postgres.start()

        server = starting.ready(timeout=120)
        assert httpx.get(f"{server.url}/readyz", timeout=30).json()["status"] == "ready"
    finally:
        if starting.server is not None:
            starting.server.stop()
        starting.thread.join(60)
    text = log.read_text(errors="replace")
    assert f"the database at 127.0.0.1:{late_postgres.port} is up" in text
    # each wait is logged, and the pauses grow (0.1 s, 0.2 s, 0.4 s, …)
    assert "retrying in 0.1 s" in text and "retrying in 0.2 s" in text
    assert "retrying in 0.4 s" in text
    assert "Traceback" not in text


def test_serve_waits_until_ready_then_answers(
    late_redis: RedisServer, late_postgres: PostgresServer, tmp_path: Path
) -> None:
    """Once up after the wait, it is a working server: migrated, keyed, scoring."""
    env = {
        "REDIS_URL": late_redis.url,
        "DATABASE_URL": late_postgres.url,
        "MODEL_DIR": str(TINY_MODEL_DIR),
        "DATA_DIR": str(tmp_path / "data"),
        "STARTUP_TIMEOUT_S": "120",
    }
    log = tmp_path / "serve.log"
    starting = Starting(env, log)
    try:
        wait_for_text(log, "waiting for Redis")
        late_postgres.start()  # the database first this time, Redis last
        late_redis.start()
        server = starting.ready(timeout=120)
        body = {"event_id": "e1", "time": "2026-11-25T08:00:00Z", "values": {}}
        answer = httpx.post(
            f"{server.url}/v1/entities/p1/events", json=body, headers=server.headers, timeout=30
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["step"] == 1
        ready = httpx.get(f"{server.url}/readyz", timeout=30).json()
        assert ready["checks"]["redis"] == "ok" and ready["checks"]["database"] == "ok"
    finally:
        if starting.server is not None:
            starting.server.stop()
        starting.thread.join(60)


def test_serve_gives_up_after_startup_timeout_naming_what_it_waited_for(tmp_path: Path) -> None:
    redis_port = free_port()  # nobody listens there
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "MODEL_DIR": str(TINY_MODEL_DIR),
        "DATA_DIR": str(tmp_path / "data"),
        "STARTUP_TIMEOUT_S": "1.5",
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "riskstream.cli", "serve", "--port", str(free_port())],
        env={**os.environ, **env},
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 1, err
    assert (
        f"Redis at 127.0.0.1:{redis_port} still unreachable after 1.5 s (STARTUP_TIMEOUT_S)" in err
    )
    assert err.count("waiting for Redis") >= 3  # 0.1 + 0.2 + 0.4 + … within 1.5 s
    assert "Traceback" not in err
    assert elapsed >= 1.5
