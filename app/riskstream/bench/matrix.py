"""The figures of ``docs/performance.md``: ``riskstream bench`` over a grid of settings.

Every cell is one ``riskstream bench`` command (printed beside its figures) with a fresh server,
and for PostgreSQL a fresh database; batching on and off are measured one after the other, in
the same run of this script. Prints a Markdown table; ``--out`` keeps every bench's JSON.

    python -m riskstream.bench.matrix --out runs/perf.jsonl \\
        --database-url postgresql://postgres@127.0.0.1:5432/postgres \\
        --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

BENCH_DATABASE = "riskstream_bench"


@dataclass(frozen=True)
class Cell:
    mode: str  # single | bulk
    load: int  # concurrency (single) or events per POST (bulk)
    workers: int
    backend: str  # embedded | external
    batching: bool

    def argv(self, args: argparse.Namespace) -> list[str]:
        argv = ["--mode", self.mode, "--entities", str(args.entities)]
        argv += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
        argv += ["--repeat", str(args.repeat), "--workers", str(self.workers)]
        if self.mode == "single":
            argv += ["--concurrency", str(self.load)]
        else:
            argv += ["--bulk-size", str(self.load), "--concurrency", str(args.bulk_concurrency)]
        argv.append("--batching" if self.batching else "--no-batching")
        if self.backend == "external":
            argv += ["--redis-url", args.redis_url, "--database-url", bench_database(args)]
        return argv


def bench_database(args: argparse.Namespace) -> str:
    return make_url(args.database_url).set(database=BENCH_DATABASE).render_as_string(False)


def fresh_database(admin_url: str) -> None:
    """Drop and create the bench's own database, so every cell starts from empty tables."""
    url = make_url(admin_url).set(drivername="postgresql+psycopg")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)"))
            connection.execute(text(f"CREATE DATABASE {BENCH_DATABASE}"))
    finally:
        engine.dispose()


def cells(args: argparse.Namespace) -> Iterator[Cell]:
    backends = ["embedded"] + (["external"] if args.database_url and args.redis_url else [])
    for backend, workers in itertools.product(backends, args.workers):
        if "single" in args.modes:
            for load, batching in itertools.product(args.concurrency, (True, False)):
                yield Cell("single", load, workers, backend, batching)
        if "bulk" in args.modes:
            for load, batching in itertools.product(args.bulk_size, (True, False)):
                yield Cell("bulk", load, workers, backend, batching)


def measure(cell: Cell, args: argparse.Namespace) -> tuple[str, dict[str, Any] | None]:
    argv = cell.argv(args)
    command = "riskstream bench " + shlex.join(argv)
    if cell.backend == "external":
        fresh_database(args.database_url)
    done = subprocess.run(
        [sys.executable, "-m", "riskstream.cli", "bench", *argv], capture_output=True, check=False
    )
    lines = done.stdout.decode().strip().splitlines()
    if not lines:
        print(f"failed: {command}\n{done.stderr.decode()[-2000:]}", file=sys.stderr)
        return command, None
    return command, orjson.loads(lines[-1])


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def row(cell: Cell, result: dict[str, Any] | None) -> str:
    label = f"{cell.mode} {'c' if cell.mode == 'single' else '×'}{cell.load}"
    head = [label, str(cell.workers), cell.backend, "on" if cell.batching else "off"]
    if result is None:
        return "| " + " | ".join(head + ["failed"] * 7) + " |"
    m = result["median"]
    unexpected = result["unexpected"] + sum(result["errors"].values())
    figures = [
        _cell(m["events_per_s"]),
        _cell(m["p50_ms"]),
        _cell(m["p99_ms"]),
        _cell(m["end_to_end_events_per_s"]),
        _cell(m["mean_batch"]),
        _cell(m["server_cpu_ms_per_event"]),
        str(unexpected),
    ]
    return "| " + " | ".join(head + figures) + " |"


HEADER = (
    "| load | workers | backend | batching | events/s | p50 ms | p99 ms | events/s incl. SQL "
    "| mean batch | server CPU ms/event | unexpected |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m riskstream.bench.matrix", description=__doc__)
    p.add_argument("--modes", default="single,bulk")
    p.add_argument("--concurrency", type=_ints, default=[1, 16, 64, 256])
    p.add_argument("--bulk-size", type=_ints, default=[100, 1000])
    p.add_argument("--bulk-concurrency", type=int, default=4)
    p.add_argument("--workers", type=_ints, default=[1, 2])
    p.add_argument("--entities", type=int, default=10_000)
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--database-url", help="PostgreSQL server (its bench database is recreated)")
    p.add_argument("--redis-url", help="Redis for the external-backend rows")
    p.add_argument("--out", type=Path, help="append every bench's JSON here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.modes = args.modes.split(",")
    print(HEADER, flush=True)
    commands = []
    failed = 0
    for cell in cells(args):
        command, result = measure(cell, args)
        commands.append(command)
        failed += result is None
        print(row(cell, result), flush=True)
        if args.out is not None and result is not None:
            with args.out.open("ab") as out:
                out.write(orjson.dumps({"command": command, **result}) + b"\n")
    print("\nCommands, in the order of the rows:\n")
    for command in commands:
        print(f"    {command}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
