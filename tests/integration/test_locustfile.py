"""The shipped locustfile drives a real server without a failure (a short, bounded run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest

from tests.support.paths import PROJECT_ROOT
from tests.support.server import ServerProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_spec("locust") is None, reason="needs the bench extra (locust)"),
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    unlimited = {"RATE_LIMIT_EVENTS_S": "1000000000", "RATE_LIMIT_BURST": "1000000000"}
    running = ServerProcess(
        {"DATA_DIR": str(tmp_path / "data"), **unlimited}, tmp_path / "server.log"
    )
    try:
        yield running
    finally:
        running.stop()


def test_locust_users_send_streams_and_every_answer_is_the_expected_one(
    server: ServerProcess,
) -> None:
    env = {"LOCUST_ENTITIES": "20", "LOCUST_DUP_RATE": "0.1", "LOCUST_LATE_RATE": "0.1"}
    # the admin key of the server it started (after issue 12's wiring; before, no key is needed)
    env["RISKSTREAM_API_KEY"] = server.admin_key() or server.create_key(
        "locust", ["ingest", "read"]
    )
    locust = [sys.executable, "-m", "locust", "-f", str(PROJECT_ROOT / "locustfile.py")]
    done = subprocess.run(
        [*locust, "--headless", "--host", server.url, "-u", "4", "-r", "4", "-t", "4s", "--json"],
        capture_output=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    stats = {row["name"]: row for row in json.loads(done.stdout)}
    sent = {name: row["num_requests"] for name, row in stats.items()}
    failed = {name: row["num_failures"] for name, row in stats.items() if row["num_failures"]}
    assert not failed, failed
    assert sent.get("/v1/entities/[id]/events (new)", 0) > 0, sent
    assert sent.get("/v1/events (bulk)", 0) > 0, sent
