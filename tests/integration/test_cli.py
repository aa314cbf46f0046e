"""The command line as a user meets it: help on every command and option, ``--version``, the
settings in ``serve --help``, and progress bars that never reach stdout."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest
from riskstream import __version__
from riskstream.cli import main
from riskstream.settings import DEFAULT_MODEL_DIR, Settings

from tests.support.paths import PROJECT_ROOT

COMMANDS = [
    [],
    ["serve"],
    ["dead-letters"],
    ["dead-letters", "list"],
    ["dead-letters", "replay"],
    ["keys"],
    ["keys", "create"],
    ["keys", "list"],
    ["keys", "revoke"],
    ["demo"],
    ["bench"],
    ["evaluate"],
]
TINY_MODEL = PROJECT_ROOT / "tests/fixtures/models/tiny/0.1.0"
SAMPLE = PROJECT_ROOT / "models/data/physionet2019-sample.parquet"


def help_of(command: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def entries_without_help(text: str) -> list[str]:
    """The options and commands of argparse's help that carry no help text: an entry (indented
    2 or 4 after a section header) with nothing beside it and no deeper-indented line below."""
    lines = text.splitlines()
    bare: list[str] = []
    in_section = False
    for i, line in enumerate(lines):
        if line and not line[0].isspace():
            # a section header ("options:") or the description; the settings list has no options
            in_section = line.endswith(":") and not line.startswith("settings (")
            continue
        indent = len(line) - len(line.lstrip())
        if not in_section or indent not in (2, 4) or not line.strip():
            continue
        beside = re.search(r"\S {2,}\S", line.strip())
        below = lines[i + 1] if i + 1 < len(lines) else ""
        continued = below.strip() and len(below) - len(below.lstrip()) > indent + 2
        if not beside and not continued and not line.strip().startswith("{"):
            bare.append(line.strip())
    return bare


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "riskstream")
def test_every_command_and_option_has_help(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    if command == ["evaluate"]:
        pytest.importorskip("pandas")  # the train extra
    text = help_of(command, capsys)
    assert text.startswith("usage: riskstream")
    assert "--help" in text
    assert entries_without_help(text) == []
    assert "``" not in text  # no reStructuredText


def test_the_help_checker_finds_an_option_without_help() -> None:
    text = "usage: x\n\noptions:\n  -h, --help  show this\n  --seed SEED\n  --url URL   where\n"
    assert entries_without_help(text) == ["--seed SEED"]


def test_the_top_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of([], capsys)
    for name in ("serve", "dead-letters", "keys", "demo", "bench", "evaluate", "--version"):
        assert re.search(rf"^\s+{name}\b", text, re.MULTILINE), name


def test_serve_help_lists_every_setting_with_its_description(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = " ".join(help_of(["serve"], capsys).split())  # wrapped lines joined
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
        assert f"{name.upper()} {' '.join(field.description.split())}" in text, name


def test_version_names_the_package_and_the_default_model() -> None:
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    done = subprocess.run(
        [sys.executable, "-m", "riskstream.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    expected = f"riskstream {__version__} (default model {manifest['name']} {manifest['version']})"
    assert done.stdout.strip() == expected


def run_with_terminal_stderr(
    command: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``command`` with stdout a pipe and stderr a pseudo-terminal: exit code, stdout, and
    what the terminal showed."""
    leader, follower = pty.openpty()
    rows_columns = struct.pack("HHHH", 40, 120, 0, 0)  # a terminal's size, as a window has
    fcntl.ioctl(follower, termios.TIOCSWINSZ, rows_columns)
    shown: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the follower side closed: the process ended
                return
            if not chunk:
                return
            shown.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=240,
            check=False,
        )
    finally:
        os.close(follower)
        reader.join(30)
        os.close(leader)
    return done.returncode, done.stdout.decode(), b"".join(shown).decode(errors="replace")


@pytest.fixture
def event_slice(tmp_path: Path) -> Path:
    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(SAMPLE)
    keep = sorted(frame.patient_id.unique())[:40]
    path = tmp_path / "slice.csv"
    frame[frame.patient_id.isin(keep)].to_csv(path, index=False)
    return path


@pytest.mark.parametrize("quiet", [False, True], ids=["bar", "quiet"])
def test_evaluate_draws_its_bar_on_a_terminal_and_stdout_stays_json(
    event_slice: Path, tmp_path: Path, quiet: bool
) -> None:
    command = [sys.executable, "-m", "riskstream.cli", "evaluate", "--model", str(TINY_MODEL)]
    command += ["--data", str(event_slice)] + (["--quiet"] if quiet else [])
    code, out, terminal = run_with_terminal_stderr(command, tmp_path)
    assert code == 0, terminal
    assert json.loads(out)["data"]["entities"] == 40  # the whole of stdout is the JSON
    assert ("evaluate:" in terminal and "event" in terminal) is not quiet, terminal


def test_evaluate_draws_no_bar_when_stderr_is_not_a_terminal(event_slice: Path) -> None:
    command = [sys.executable, "-m", "riskstream.cli", "evaluate", "--model", str(TINY_MODEL)]
    done = subprocess.run(
        [*command, "--data", str(event_slice)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["data"]["entities"] == 40
    assert "evaluate:" not in done.stderr


@pytest.mark.slow
def test_bench_draws_its_bar_on_a_terminal_and_prints_one_json_object(tmp_path: Path) -> None:
    # its own server on the embedded defaults, whatever this environment names
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    command = [sys.executable, "-m", "riskstream.cli", "bench", "--duration", "1"]
    command += ["--warmup", "0.3", "--entities", "100", "--concurrency", "4"]
    code, out, terminal = run_with_terminal_stderr(command, tmp_path, env)
    assert code == 0, terminal
    (line,) = out.strip().splitlines()  # nothing but the JSON on stdout
    assert json.loads(line)["events"] > 0
    assert "bench: measure" in terminal, terminal
