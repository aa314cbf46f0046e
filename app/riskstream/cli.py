"""The ``riskstream`` command."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("riskstream")


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from riskstream.adapters.embedded_redis import EmbeddedRedis
    from riskstream.adapters.sql.database import migrate
    from riskstream.settings import Settings

    settings = Settings()
    if not settings.auth and not is_loopback(args.host):
        print(
            f"riskstream serve: refusing to start with AUTH=off on --host {args.host}: without "
            "authentication anyone who can reach the port can read and write health data. "
            "Bind to 127.0.0.1 (or ::1, localhost) for local experiments, or turn AUTH on.",
            file=sys.stderr,
        )
        return 2
    embedded: EmbeddedRedis | None = None
    if settings.redis_url is None:
        # One embedded server for every worker process; they find it through REDIS_URL.
        embedded = EmbeddedRedis(settings.data_dir / "redis")
        os.environ["REDIS_URL"] = embedded.start()
    if args.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Each worker writes its metrics here; /metrics on any worker sums them all.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="riskstream-metrics-")
    # uvicorn re-raises SIGINT/SIGTERM once it has shut down; as an exception (not the default
    # action, which ends the process on the spot) it lets the embedded redis-server stop too.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit)
    try:
        migrate(settings.resolved_database_url())
        if settings.auth:
            _admin_key(settings, args)
        else:
            log.warning("AUTH is off: no request is checked (local experiments only)")
        uvicorn.run(
            "riskstream.bootstrap:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            access_log=args.access_log,
            proxy_headers=args.proxy_headers,
        )
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: where AUTH=off may listen."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _admin_key(settings: object, args: argparse.Namespace) -> None:
    """The first start's admin key (``riskstream.admin_key``), and the dashboard's signed-in URL.

    The log gets the key file's path, never the secret. The URL (stdout only, not the log)
    carries the secret in its fragment, which a browser never sends to the server."""
    from riskstream.admin_key import ADMIN_KEY_FILE, ensure_admin_key
    from riskstream.settings import Settings

    assert isinstance(settings, Settings)
    created = ensure_admin_key(settings.resolved_database_url(), settings.data_dir)
    if created is not None:
        log.warning("created the admin API key (every scope); its secret is in %s", created)
    path = settings.data_dir / ADMIN_KEY_FILE
    try:
        secret = path.read_text().strip()
    except OSError:
        return  # keys existed before this start (or the file was moved away): nothing to show
    host = args.host if args.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    print(f"dashboard (signed in as admin): http://{host}:{args.port}/ui/#key={secret}", flush=True)


def _dead_letters(args: argparse.Namespace) -> int:
    """List or replay the outbox's dead letters, on the Redis ``serve`` uses (same settings)."""
    import asyncio

    from riskstream.adapters.embedded_redis import EmbeddedRedis
    from riskstream.adapters.redis_outbox import STREAM_ID
    from riskstream.core.errors import Unavailable
    from riskstream.settings import Settings

    ids: list[str] | None = getattr(args, "id", None)
    bad = [i for i in ids or [] if not STREAM_ID.match(i)]
    if bad:
        print(f"riskstream dead-letters: not a dead letter id: {', '.join(bad)}", file=sys.stderr)
        return 2
    settings = Settings()
    embedded: EmbeddedRedis | None = None
    url = settings.redis_url
    if url is None:
        embedded = EmbeddedRedis(settings.data_dir / "redis")
        url = embedded.start()
    try:
        return asyncio.run(_dead_letters_on(url, settings.key_prefix, args.action, ids))
    except Unavailable as exc:
        print(f"riskstream dead-letters: {exc.message}", file=sys.stderr)
        return 1
    finally:
        if embedded is not None:
            embedded.stop()


async def _dead_letters_on(url: str, prefix: str, action: str, ids: list[str] | None) -> int:
    import orjson
    import redis.asyncio as aioredis

    from riskstream.adapters.redis_outbox import RedisOutbox

    client = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
    try:
        outbox = RedisOutbox(client, prefix=prefix, claim_idle_ms=60_000)
        if action == "list":
            for letter in await outbox.dead_letters():
                sys.stdout.write(orjson.dumps(letter).decode() + "\n")
        else:
            moved = await outbox.replay(ids)
            print(f"{moved} dead letter(s) moved back to the outbox")
    finally:
        await client.aclose()
    return 0


def _evaluate(argv: Sequence[str]) -> int:
    try:
        from riskstream_models.evaluate import main as evaluate_main
    except ImportError as exc:
        print(
            f"riskstream evaluate needs the evaluation extras: pip install -e '.[train]' ({exc})",
            file=sys.stderr,
        )
        return 2
    result: int = evaluate_main(list(argv))
    return result


def _adapt(argv: Sequence[str]) -> int:
    """``riskstream adapt``: ``riskstream_models.adapt`` on a file, or on the service's own events
    table (``--from-log [DATABASE_URL]``, default: the database ``serve`` uses)."""
    try:
        from riskstream_models.adapt import main as adapt_main
    except ImportError as exc:
        print(
            f"riskstream adapt needs the training extras: pip install -e '.[train]' and torch "
            f"({exc})",
            file=sys.stderr,
        )
        return 2
    source = argparse.ArgumentParser(add_help=False)
    source.add_argument("--from-log", nargs="?", const="", default=None, metavar="DATABASE_URL")
    known, rest = source.parse_known_args(list(argv))
    if known.from_log is None:
        result: int = adapt_main(rest)
        return result
    if "--data" in rest:
        print("riskstream adapt: give --data FILE or --from-log, not both", file=sys.stderr)
        return 2
    from riskstream.adapters.sql.event_log import ENTITY_COLUMN, TIME_COLUMN, export_event_log
    from riskstream.settings import Settings

    url = known.from_log or Settings().resolved_database_url()
    with tempfile.TemporaryDirectory(prefix="riskstream-adapt-") as tmp:
        data = os.path.join(tmp, "events.parquet")
        count = export_event_log(url, Path(data))
        print(f"{count} logged events read from the events table", file=sys.stderr)
        if count == 0:
            print("riskstream adapt: the events table is empty", file=sys.stderr)
            return 2
        result = adapt_main(
            [*rest, "--data", data, "--entity", ENTITY_COLUMN, "--time", TIME_COLUMN]
        )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="riskstream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service (embedded defaults if unset)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=False)
    serve.add_argument(
        "--proxy-headers",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="trust X-Forwarded-* from FORWARDED_ALLOW_IPS (behind a reverse proxy)",
    )

    dead = commands.add_parser(
        "dead-letters", help="outbox entries the database refused: list them or replay them"
    )
    actions = dead.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="one JSON line per dead letter, oldest first")
    replay = actions.add_parser(
        "replay", help="move dead letters back to the outbox to be drained again (all if no --id)"
    )
    replay.add_argument("--id", action="append", metavar="ID", help="a dead letter's id")

    commands.add_parser(
        "evaluate", help="score an event table with a model artifact", add_help=False
    )

    commands.add_parser(
        "adapt",
        help="adapt a model artifact to a site's own events (a file or --from-log)",
        add_help=False,
    )

    commands.add_parser(
        "bench", help="load-test a server (see docs/performance.md)", add_help=False
    )

    # API keys (issue 12): the command's code is in app/riskstream/keys_cli.py.
    commands.add_parser("keys", help="create, list and revoke API keys", add_help=False)

    if argv and argv[0] == "evaluate":
        return _evaluate(argv[1:])
    if argv and argv[0] == "adapt":
        return _adapt(argv[1:])
    if argv and argv[0] == "demo":
        from riskstream.demo import main as demo_main

        demo_result: int = demo_main(list(argv[1:]))
        return demo_result
    if argv and argv[0] == "bench":
        from riskstream.bench import main as bench_main

        bench_result: int = bench_main(list(argv[1:]))
        return bench_result
    if argv and argv[0] == "keys":
        from riskstream.keys_cli import main as keys_main

        return keys_main(argv[1:])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "serve":
        return _serve(args)
    if args.command == "dead-letters":
        return _dead_letters(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
