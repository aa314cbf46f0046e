"""A real ``riskstream serve`` process for tests, started through the command as a user would.

The tests' own helper: the load generator (``riskstream.bench``) has one for its own server, but a
test fixture must not depend on a product tool, and the bench is free to change its helper.
"""

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
    """A 127.0.0.1 port nobody listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """``python -m riskstream.cli serve`` on a free 127.0.0.1 port, ready (``/readyz`` 200) once
    constructed, in a session of its own so that ``stop`` takes its worker processes down too.

    ``env`` adds to this process's environment; with ``inherit=False`` it is the whole of it.
    ``headers`` carries ``key`` (else the admin key the server's first start wrote to
    ``DATA_DIR/admin.key``) as ``Authorization: Bearer``.
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
        serve_args: Sequence[str] = (),
    ) -> None:
        """``serve_args`` go to ``riskstream serve`` after this class's own (``--log-level
        warning``), so e.g. ``--log-level info`` overrides them."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {**os.environ, **env} if inherit else dict(env)
        self.cwd = cwd or Path.cwd()
        self.data_dir = self.cwd / self.env.get("DATA_DIR", "riskstream-data")
        self.key: str | None = None
        command = [sys.executable, "-m", "riskstream.cli", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--workers", str(workers), "--log-level", "warning"]
        command += serve_args
        with log_path.open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                command,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready(timeout)

    @property
    def pid(self) -> int:
        return self.process.pid

    def admin_key(self) -> str | None:
        """The secret the server's first start wrote to ``DATA_DIR/admin.key``, if any."""
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
        key = self.key or self.admin_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)  # the poll's pace; the deadline bounds the wait
        self.stop()
        raise RuntimeError(f"server not ready in {timeout}s: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait; SIGKILL the whole session if it does not end in time."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
