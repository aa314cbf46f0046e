"""The ``riskstream bench`` command: arguments, its own server or a target, the printed JSON."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from riskstream.bench.run import Run
from riskstream.bench.scenario import Scenario
from riskstream.bench.server import (
    ServerProcess,
    cpu_seconds,
    delete_keys,
    processes_under,
    session_members,
)

MAX_DURATION_S = 600.0
MAX_EVENTS = 50_000_000
UNLIMITED = 1_000_000_000  # the own server's RATE_LIMIT_EVENTS_S and RATE_LIMIT_BURST


@contextlib.contextmanager
def own_server(args: argparse.Namespace) -> Iterator[tuple[ServerProcess, Path]]:
    """A fresh server in a temporary folder; afterwards its leftovers and Redis keys go too."""
    with tempfile.TemporaryDirectory(prefix="riskstream-bench-") as tmp:
        env = {**os.environ, "DATA_DIR": str(Path(tmp) / "data")}
        env["BATCHING"] = "true" if args.batching else "false"
        env["KEY_PREFIX"] = args.key_prefix or f"bench-{uuid.uuid4().hex[:10]}"
        # the key's rate limit still runs (its cost is measured) but never refuses the load
        env["RATE_LIMIT_EVENTS_S"] = env["RATE_LIMIT_BURST"] = str(UNLIMITED)
        for name, value in (("REDIS_URL", args.redis_url), ("DATABASE_URL", args.database_url)):
            if value:
                env[name] = value
            else:
                env.pop(name, None)
        for item in args.env:
            key, _, value = item.partition("=")
            env[key] = value
        log_path = Path(tmp) / "server.log"
        server = ServerProcess(
            env, log_path, workers=args.workers, inherit=False, timeout=args.server_timeout
        )
        try:
            print(f"bench: server pid {server.pid} at {server.url}", file=sys.stderr, flush=True)
            server.key = server.admin_key() or bench_key(server)
            yield server, Path(tmp)
        finally:
            server.stop()
            for pid in processes_under(Path(tmp)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
                    print(f"bench: stopped stray process {pid} in {tmp}", file=sys.stderr)
            if args.redis_url and not args.key_prefix and not args.keep_keys:
                delete_keys(args.redis_url, env["KEY_PREFIX"])
            if args.server_log:
                Path(args.server_log).write_bytes(log_path.read_bytes())


def bench_key(server: ServerProcess) -> str:
    """A key of the bench's own (when the server's database held keys, so no admin.key)."""
    return server.create_key(f"bench-{uuid.uuid4().hex[:10]}", ["ingest", "read"])


def _features(url: str, key: str | None) -> list[str]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.get(f"{url}/v1/model", timeout=10, headers=headers)
    r.raise_for_status()
    return [f["name"] for f in r.json()["features"]]


# -- the command ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="riskstream bench",
        description="Bounded load test of the service; prints one JSON object on stdout "
        "(progress on stderr, only when it is a terminal). See docs/performance.md.",
    )
    p.add_argument("--url", help="target a running server (127.0.0.1 only); default: start one")
    p.add_argument(
        "--key",
        default=os.environ.get("RISKSTREAM_API_KEY") or None,
        help="API key (scopes ingest, read) for --url; default: env RISKSTREAM_API_KEY. "
        "Without --url: the started server's DATA_DIR/admin.key",
    )
    p.add_argument(
        "--mode",
        choices=("single", "bulk"),
        default="single",
        help="one event per POST, or --bulk-size events per POST /v1/events (default: single)",
    )
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    p.add_argument("--bulk-size", type=int, default=1000, help="events per bulk POST")
    p.add_argument(
        "--entities", type=int, default=10_000, help="simulated patients (default: 10000)"
    )
    p.add_argument(
        "--duration", type=float, default=10.0, help=f"seconds measured (≤{MAX_DURATION_S:g})"
    )
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    p.add_argument("--max-events", type=int, default=MAX_EVENTS, help="stop after this many events")
    p.add_argument("--dup-rate", type=float, default=0.02, help="share of re-sent events")
    p.add_argument("--late-rate", type=float, default=0.01, help="share of late events (409)")
    p.add_argument("--gap-mean", type=float, default=900.0, help="mean seconds between events")
    p.add_argument("--seed", type=int, default=1, help="the scenario's random seed")
    p.add_argument(
        "--repeat", type=int, default=1, help="measured runs (one server); medians are reported"
    )
    p.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="HTTP client: a minimal keep-alive one (cheap on CPU), or httpx (default: raw)",
    )
    p.add_argument(
        "--request-timeout", type=float, default=30.0, help="seconds per request (default: 30)"
    )
    p.add_argument("--drain-timeout", type=float, default=120.0, help="bound on the SQL drain wait")
    p.add_argument("--accept-late", action="store_true", help="the server has ACCEPT_LATE_EVENTS")
    p.add_argument("--quiet", action="store_true", help="no progress bars on stderr")
    g = p.add_argument_group("own server (without --url)")
    g.add_argument("--workers", type=int, default=None, help="server worker processes (default 1)")
    g.add_argument(
        "--batching",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the server's BATCHING (default: on)",
    )
    g.add_argument("--redis-url", help="REDIS_URL for the server (default: embedded)")
    g.add_argument("--database-url", help="DATABASE_URL for the server (default: SQLite)")
    g.add_argument("--key-prefix", help="KEY_PREFIX (default: a fresh one, deleted afterwards)")
    g.add_argument(
        "--keep-keys", action="store_true", help="keep the run's keys in an external Redis"
    )
    g.add_argument("--env", action="append", default=[], metavar="K=V", help="more server env")
    g.add_argument(
        "--server-timeout",
        type=float,
        default=60.0,
        help="seconds the server may take to be ready (default: 60)",
    )
    g.add_argument("--server-log", help="copy the server's log here")
    return p


def _check(args: argparse.Namespace, p: argparse.ArgumentParser) -> None:
    if args.url:
        host = urlsplit(args.url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            p.error("--url must point at 127.0.0.1 (load goes to this machine only)")
    if not 0 < args.duration <= MAX_DURATION_S:
        p.error(f"--duration must be in (0, {MAX_DURATION_S:g}]")
    if not 0 <= args.warmup <= 60:
        p.error("--warmup must be in [0, 60]")
    if not 1 <= args.max_events <= MAX_EVENTS:
        p.error(f"--max-events must be in [1, {MAX_EVENTS}]")
    if not 1 <= args.concurrency <= 4096:
        p.error("--concurrency must be in [1, 4096]")
    if not 1 <= args.bulk_size <= 100_000:
        p.error("--bulk-size must be in [1, 100000]")
    if args.entities < 1:
        p.error("--entities must be at least 1")
    if min(args.dup_rate, args.late_rate) < 0 or args.dup_rate + args.late_rate >= 1:
        p.error("--dup-rate and --late-rate must be shares adding up to under 1")
    if not 1 <= args.repeat <= 20:
        p.error("--repeat must be in [1, 20]")
    if not 0 < args.drain_timeout <= 600:
        p.error("--drain-timeout must be in (0, 600]")


_FIGURES = {
    "events_per_s": ("events_per_s",),
    "p50_ms": ("latency_ms", "p50"),
    "p95_ms": ("latency_ms", "p95"),
    "p99_ms": ("latency_ms", "p99"),
    "end_to_end_events_per_s": ("end_to_end", "events_per_s"),
    "server_cpu_ms_per_event": ("server_cpu_ms_per_event",),
    "mean_batch": ("batch_size", "mean"),
}


def _figure(result: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = result
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else None


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median throughput in full, and each figure's median over all the runs."""
    ranked = sorted(results, key=lambda r: r["events_per_s"] or 0.0)
    summary = dict(ranked[(len(ranked) - 1) // 2])
    figures = {}
    for name, path in _FIGURES.items():
        values = [v for v in (_figure(r, path) for r in results) if v is not None]
        figures[name] = round(statistics.median(values), 3) if values else None
    summary["repeats"] = len(results)
    summary["median"] = figures
    summary["runs"] = [{name: _figure(r, path) for name, path in _FIGURES.items()} for r in results]
    summary["unexpected"] = sum(r["unexpected"] for r in results)
    summary["errors"] = {k: v for r in results for k, v in r["errors"].items()}
    return summary


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    _check(args, parser)

    def run_once(
        url: str, backend: str, server: tuple[ServerProcess, Path] | None
    ) -> dict[str, Any]:
        scenario = Scenario(
            entities=args.entities,
            dup_rate=args.dup_rate,
            late_rate=args.late_rate,
            gap_mean_s=args.gap_mean,
            seed=args.seed,
            features=_features(url, args.key),
            run_id=uuid.uuid4().hex[:8],
        )
        bench = Run(args, scenario, url)
        bench.backend = backend
        if server is not None:
            process, folder = server
            bench.server_pid = process.pid
            bench.server_cpu = lambda: cpu_seconds(
                session_members(process.pid) + processes_under(folder)
            )
        loop = _new_loop()
        try:
            return loop.run_until_complete(bench.go())
        finally:
            loop.close()

    def run(url: str, backend: str, server: tuple[ServerProcess, Path] | None) -> dict[str, Any]:
        return summarise([run_once(url, backend, server) for _ in range(args.repeat)])

    try:
        if args.url:
            result = run(args.url.rstrip("/"), "external", None)
        else:
            args.workers = args.workers or 1
            args.batching = True if args.batching is None else args.batching
            backend = (
                ("redis" if args.redis_url else "embedded-redis")
                + "+"
                + (args.database_url.split(":", 1)[0] if args.database_url else "sqlite")
            )
            with own_server(args) as (server, folder):
                args.key = server.key
                result = run(server.url, backend, (server, folder))
    except (RuntimeError, httpx.HTTPError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(result).decode())
    return 0 if not result["unexpected"] and not result["errors"] else 3


if __name__ == "__main__":
    raise SystemExit(main())
