"""``riskstream serve`` secure by default: the first start's admin key, and no AUTH=off on a
network address."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from riskstream.cli import dashboard_line, is_loopback
from riskstream.settings import Settings

from tests.support.paths import PROJECT_ROOT
from tests.support.server import free_port
from tests.support.service import server_env


def test_auth_off_on_a_network_address_refuses_to_start(settings: Settings) -> None:
    env = {**os.environ, **server_env(settings, AUTH="false")}
    done = subprocess.run(
        [sys.executable, "-m", "riskstream.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "refusing to start with AUTH=off on --host 0.0.0.0" in done.stderr


def test_loopback_addresses() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LocalHost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "example.org", "128.0.0.1"):
        assert not is_loopback(host), host


def test_first_start_writes_the_admin_key_logs_its_path_and_prints_the_signed_in_url(
    settings: Settings, blank_database_url: str, tmp_path: Path
) -> None:
    data = tmp_path / "fresh-data"
    port = free_port()
    env = {
        **os.environ,
        **server_env(settings, AUTH="true", DATABASE_URL=blank_database_url, DATA_DIR=str(data)),
    }
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "riskstream.cli", "serve", "--port", str(port)],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, err.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        key_file = data / "admin.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        secret = key_file.read_text().strip()
        headers = {"authorization": f"Bearer {secret}"}
        assert httpx.get(f"{url}/v1/model", headers=headers).status_code == 200
        assert httpx.get(f"{url}/v1/model").status_code == 401
        log = err.read_text()
        assert str(key_file) in log
        assert secret not in log
        # stdout is a file here, as in a container: the URL without the secret, and the path
        printed = out.read_text()
        assert secret not in printed
        assert f"/ui/ (sign in with the admin key in {key_file})" in printed
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def test_cors_origins_as_a_comma_list_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    assert Settings().cors_origins == ["https://a.example", "https://b.example"]
    monkeypatch.setenv("CORS_ORIGINS", '["https://a.example"]')
    assert Settings().cors_origins == ["https://a.example"]
    monkeypatch.setenv("CORS_ORIGINS", "")
    assert Settings().cors_origins == []


def test_the_signed_in_url_only_on_a_terminal(tmp_path: Path) -> None:
    key_file = tmp_path / "admin.key"
    secret = "rsk_0123456789abcdef_" + "x" * 43
    on_terminal = dashboard_line("0.0.0.0", 8000, secret, key_file, terminal=True)
    assert re.findall(r"http://127\.0\.0\.1:8000/ui/#key=(\S+)", on_terminal) == [secret]
    assert dashboard_line("::1", 8000, secret, key_file, True).startswith(
        "dashboard (signed in as admin): http://[::1]:8000/ui/#key="
    )
    elsewhere = dashboard_line("10.0.0.5", 8000, secret, key_file, terminal=False)
    assert secret not in elsewhere and str(key_file) in elsewhere
    assert "http://10.0.0.5:8000/ui/ " in elsewhere
