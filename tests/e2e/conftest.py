"""A real ``riskstream serve`` process on the embedded defaults with access control on (issue 12),
and headless Debian Chromium."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
REPO = Path(__file__).resolve().parents[2]


def embedded_env(data_dir: Path) -> dict[str, str]:
    """Embedded Redis and SQLite in a folder of its own, whatever the caller's environment says."""
    dropped = {"REDIS_URL", "DATABASE_URL", "MODEL_DIR", "PROMETHEUS_MULTIPROC_DIR"}
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("AUTH")}
    env["DATA_DIR"] = str(data_dir)
    env["AUTH"] = "true"  # secure by default: the tests sign in as a user would
    return env


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """The server, with ``key`` (and so ``headers``) a key of its own: ``e2e``, read and ingest."""
    server = ServerProcess(embedded_env(tmp_path / "data"), tmp_path / "server.log", inherit=False)
    try:
        server.key = server.create_key("e2e", ["read", "ingest"])
        yield server
    finally:
        server.stop()
