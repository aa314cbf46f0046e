"""docker/Dockerfile and .dockerignore, checked without a Docker engine: hadolint finds nothing,
and the image is what the issue asks (multi-stage, the wheel, non-root, HEALTHCHECK on /readyz,
a pinned base) and is built from every file the wheel bundles. (Installing the built wheel and
running the image's command: the wheel's own test.)"""

from __future__ import annotations

import fnmatch
import json
import re

from riskstream.resources import LOCATIONS

from tests.support.deploy import DOCKER, hadolint, run
from tests.support.paths import PROJECT_ROOT

DOCKERFILE = DOCKER / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_hadolint_finds_nothing() -> None:
    done = run(hadolint(), "--no-color", str(DOCKERFILE))
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_from_a_base_pinned_by_digest() -> None:
    steps = instructions()
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base), base
    stages = [a for k, a in steps if k == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]


def test_the_runtime_stage_installs_nothing_but_the_built_environment() -> None:
    steps = instructions()
    runtime = steps[[i for i, (k, _) in enumerate(steps) if k == "FROM"][1] :]
    copies = [a for k, a in runtime if k == "COPY"]
    assert copies == ["--from=build /opt/riskstream /opt/riskstream"]
    assert not any("pip" in a for k, a in runtime if k == "RUN")
    build = steps[: len(steps) - len(runtime)]
    runs = " ".join(a for k, a in build if k == "RUN")
    assert "pip install --no-cache-dir -r requirements.lock" in runs
    assert "pip wheel" in runs and "--no-deps /dist/riskstream-*.whl" in runs
    assert "pip check" in runs
    assert "-e " not in runs  # never an editable install


def test_runs_as_an_unprivileged_user_with_a_readiness_healthcheck() -> None:
    steps = instructions()
    users = [a for k, a in steps if k == "USER"]
    assert users == ["10001:10001"]
    (health,) = [a for k, a in steps if k == "HEALTHCHECK"]
    assert "CMD [" in health and "http://127.0.0.1:8000/readyz" in health
    (cmd,) = [a for k, a in steps if k == "CMD"]
    command = json.loads(cmd)
    assert command[:2] == ["riskstream", "serve"]
    assert command[command.index("--port") + 1] == "8000"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert "--proxy-headers" in command
    env = " ".join(a for k, a in steps if k == "ENV")
    assert "DATA_DIR=/var/lib/riskstream" in env


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore's verdict on ``path``: the last matching pattern wins, ``!`` re-includes
    (a pattern also matches everything below a folder it names)."""
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.replace("**/", "*")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, body) for p in prefixes):
            verdict = not negate
    return verdict


def test_the_build_context_and_copies_hold_everything_the_wheel_bundles() -> None:
    patterns = [
        line.strip()
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # every source named by a COPY from the context (COPY a b ./ names several)
    copies = " ".join(a for k, a in instructions() if k == "COPY" and "--from" not in a).split()
    needed = [*LOCATIONS.values(), "app/riskstream", "models/riskstream_models"]
    needed += ["pyproject.toml", "README.md", "hatch_build.py", "requirements.lock"]
    for source in needed:
        assert source in copies, f"docker/Dockerfile does not COPY {source}"
        assert not ignored(source, patterns), f".dockerignore leaves out {source}"
        folder = PROJECT_ROOT / source
        if folder.is_dir():
            for file in folder.rglob("*"):
                relative = file.relative_to(PROJECT_ROOT).as_posix()
                if file.is_file() and "__pycache__" not in relative:
                    assert not ignored(relative, patterns), relative
    for left_out in (".git/HEAD", ".venv/bin/python", "tests/conftest.py", "models/aki-lstm-gbm"):
        assert ignored(left_out, patterns), left_out
    assert ignored("app/riskstream/__pycache__/cli.cpython-311.pyc", patterns)
