"""The wheel runs anywhere: built from the checkout, installed (not editable) into a fresh venv
with the locked dependencies, and run from an empty folder with the image's command, on the
embedded defaults and on an external database and Redis. It holds the service, the training
package and the files they need, nothing of the checkout besides, and reads nothing outside
itself."""

from __future__ import annotations

import json
import re
import subprocess
import time
import tomllib
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa
from riskstream.resources import LOCATIONS
from sqlalchemy.engine import make_url

from tests.support.installed import (
    Installed,
    Server,
    build_wheel,
    install,
    kill_processes_of,
    wait_no_processes_of,
)
from tests.support.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow

PROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
DIST_INFO = f"riskstream-{PROJECT['version']}.dist-info"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    venv = tmp_path_factory.mktemp("installed") / "venv"
    yield install(wheel, venv)
    kill_processes_of(venv)  # only after a failure can anything of it still run


def _site_packages(installed: Installed) -> Path:
    (found,) = installed.venv.glob("lib/python*/site-packages")
    return found


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_the_wheel_holds_the_two_packages_and_the_bundled_files_only(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = z.read(f"{DIST_INFO}/entry_points.txt").decode()
        bundled = {
            n.removeprefix("riskstream/_bundled/"): z.read(n)
            for n in names
            if n.startswith("riskstream/_bundled/")
        }
    assert {n.split("/")[0] for n in names} == {"riskstream", "riskstream_models", DIST_INFO}
    for name in names:
        parts = set(name.split("/"))
        assert not parts & {"tests", ".venv", "riskstream-data", "__pycache__"}, name
        assert not name.endswith(".pyc"), name
    assert re.search(r"^riskstream = riskstream\.cli:main$", entry_points, re.M)
    # Each bundled folder is the checkout's, byte for byte.
    expected = {
        f"{name}/{relative}": content
        for name, source in LOCATIONS.items()
        for relative, content in _files(PROJECT_ROOT / source).items()
    }
    assert bundled.keys() == expected.keys()
    assert all(bundled[k] == expected[k] for k in expected)
    assert {"model/model.onnx", "model/manifest.json", "demo/README.md"} <= bundled.keys()


def test_every_dependency_is_bounded_below_and_above(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(f"{DIST_INFO}/METADATA").decode()
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, re.M)
    assert len(requires) >= len(PROJECT["dependencies"])
    for requirement in requires:
        versions = requirement.split(";")[0]
        assert ">=" in versions and "<" in versions.replace("<=", ""), requirement


def test_the_installed_package_finds_everything_in_itself(
    installed: Installed, tmp_path: Path
) -> None:
    probe = (
        "import json, riskstream, riskstream_models\n"
        "from riskstream.resources import LOCATIONS, resource\n"
        "from riskstream.settings import Settings\n"
        "from riskstream.demo import DEFAULT_DATA\n"
        "from riskstream.adapters.sql.database import MIGRATIONS_DIR\n"
        "paths = {n: str(resource(n)) for n in LOCATIONS}\n"
        "paths.update(riskstream=riskstream.__file__, riskstream_models=riskstream_models.__file__,"
        " model_dir=str(Settings().model_dir), demo_data=str(DEFAULT_DATA),"
        " migrations_dir=str(MIGRATIONS_DIR))\n"
        "print(json.dumps(paths))\n"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run(
        [installed.python, "-c", probe],
        cwd=empty,
        env=installed.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    site = _site_packages(installed).resolve()
    for what, path in json.loads(done.stdout).items():
        assert Path(path).resolve().is_relative_to(site), (what, path)
        assert Path(path).exists(), (what, path)


def test_no_module_reaches_out_of_the_installed_package(installed: Installed) -> None:
    """``__file__`` may find files beside a module, never above its package; the one exception
    is ``resources.SOURCE_ROOT``, the checkout a source install reads when nothing is bundled."""
    site = _site_packages(installed)
    offending = []
    for package in ("riskstream", "riskstream_models"):
        for module in sorted((site / package).rglob("*.py")):
            lines = module.read_text(encoding="utf-8").splitlines()
            for number, line in enumerate(lines, 1):
                where = f"{module.relative_to(site)}:{number}: {line.strip()}"
                if "../shared" in line:
                    offending.append(where)
                climbs = "parents[" in line or re.search(r"\.parent\s*\.parent", line)
                if "__file__" in line and climbs and not line.startswith("SOURCE_ROOT = "):
                    offending.append(where)
    assert offending == [], "\n".join(offending)


def _event_time() -> str:
    return (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")


def _logged_scores(database_url: str) -> int:
    """Rows in the SQL score log, read directly (not through the service)."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(sa.text("SELECT count(*) FROM scores")).scalar_one())
    finally:
        engine.dispose()


def _wait_logged(database_url: str, count: int, timeout: float = 30.0) -> int:
    """Poll the score log until it holds ``count`` rows (the drain is asynchronous)."""
    deadline = time.monotonic() + timeout
    while (logged := _logged_scores(database_url)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return logged


def _exercise(installed: Installed, cwd: Path, env: dict[str, str], database_url: str) -> None:
    """Serve, score, check readiness, replay demo patients, see every score in SQL, stop."""
    logs = cwd.parent / f"{cwd.name}-logs"
    logs.mkdir()
    server = Server(installed, cwd, env, logs)
    try:
        server.wait_ready()
        secret = (cwd / "riskstream-data" / "admin.key").read_text().strip()
        auth = {"authorization": f"Bearer {secret}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as client:
            model = client.get("/v1/model").json()
            assert (model["name"], model["version"]) == ("aki-lstm", "1.2.0")  # the bundled one
            event = {"event_id": "e1", "time": _event_time(), "values": {"HR": 97.0}}
            scored = client.post("/v1/entities/wheel-1/events", json=event)
            assert scored.status_code == 200, scored.text
            assert scored.json()["step"] == 1
            assert scored.json()["risk"].keys() == {o["name"] for o in model["outputs"]}
            ready = client.get("/readyz").json()
            assert ready["status"] == "ready", ready
            assert ready["checks"] == {"model": "aki-lstm/1.2.0", "redis": "ok", "database": "ok"}

            # The demo from the wheel: its bundled patients, the admin key from ./riskstream-data.
            demo_args = ["--patients", "3", "--speedup", "36000", "--max-seconds", "3", "--quiet"]
            demo = subprocess.run(
                [installed.command("riskstream"), "demo", "--url", server.url, *demo_args],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert demo.returncode == 0, demo.stdout + demo.stderr
            summary = r"^done: .* (\d+)/3 admitted · (\d+) events scored"
            found = re.search(summary, demo.stdout, re.M)
            assert found, demo.stdout
            admitted, replayed = int(found.group(1)), int(found.group(2))
            assert admitted > 0, demo.stdout
            feed = client.get("/v1/scores", params={"limit": 1000}).json()
            entities = {s["entity_id"] for s in feed["scores"]}
            assert len(feed["scores"]) == replayed + 1
            assert len(entities - {"wheel-1"}) == admitted, entities

        assert _wait_logged(database_url, replayed + 1) == replayed + 1
        assert server.terminate() == 0, server.log()
    finally:
        server.kill()
    left = wait_no_processes_of(installed.venv)
    assert left == [], f"still running after serve stopped: {left}"


def test_serve_on_the_embedded_defaults_from_an_empty_folder(
    installed: Installed, tmp_path: Path
) -> None:
    cwd = tmp_path / "empty"
    cwd.mkdir()
    data = cwd / "riskstream-data"
    _exercise(installed, cwd, installed.env(), f"sqlite:///{data / 'riskstream.sqlite3'}")
    # SQLite and the embedded Redis kept their files here, and only here.
    assert {p.name for p in cwd.iterdir()} == {"riskstream-data"}
    assert (data / "redis").is_dir()


def test_serve_on_an_external_database_and_redis(
    installed: Installed,
    tmp_path: Path,
    blank_database_url: str,
    redis_url: str,
    key_prefix: str,
) -> None:
    """PostgreSQL and Redis in CI's second pass (RISKSTREAM_TEST_*): a database of its own,
    created and dropped by the fixture; Redis keys under a prefix of its own, deleted after."""
    cwd = tmp_path / "empty"
    cwd.mkdir()
    env = installed.env(DATABASE_URL=blank_database_url, REDIS_URL=redis_url, KEY_PREFIX=key_prefix)
    _exercise(installed, cwd, env, blank_database_url)
    # The state went to that Redis, under that prefix; only the admin key file is local.
    client = redis.Redis.from_url(redis_url)
    try:
        assert any(True for _ in client.scan_iter(match=f"{key_prefix}:*", count=1000))
    finally:
        client.close()
    assert {p.relative_to(cwd).as_posix() for p in cwd.rglob("*")} == {
        "riskstream-data",
        "riskstream-data/admin.key",
    }
