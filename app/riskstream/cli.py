"""The ``riskstream`` command: ``serve`` and the commands around it.

``build_parser`` is the whole command line (every command's help); the commands with parsers of
their own (``keys``, ``demo``, ``bench``, ``evaluate``) get their arguments as given.
"""

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

    from riskstream import logs
    from riskstream.adapters.embedded_redis import EmbeddedRedis
    from riskstream.adapters.sql.database import migrate
    from riskstream.settings import Settings
    from riskstream.startup import DependencyUnavailable, wait_for_dependencies

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
        try:
            wait_for_dependencies(settings)
        except DependencyUnavailable as exc:
            print(f"riskstream serve: {exc}", file=sys.stderr)
            return 1
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
            log_config=logs.config(settings.log_format, args.log_level),
            access_log=args.access_log,
            proxy_headers=args.proxy_headers,
            forwarded_allow_ips=settings.forwarded_allow_ips,
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


def dashboard_line(host: str, port: int, secret: str, key_file: Path, terminal: bool) -> str:
    """What ``serve`` prints for the dashboard. On a terminal: the signed-in URL, the secret in
    its fragment (a browser never sends it to the server). Otherwise stdout is likely a log (a
    container's, a service manager's), which must never hold a secret: the plain URL and where
    the key is."""
    host = host if host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    if terminal:
        return f"dashboard (signed in as admin): http://{host}:{port}/ui/#key={secret}"
    return f"dashboard: http://{host}:{port}/ui/ (sign in with the admin key in {key_file})"


def _admin_key(settings: object, args: argparse.Namespace) -> None:
    """The first start's admin key (``riskstream.admin_key``), and the dashboard's URL.

    The log gets the key file's path, never the secret; so does stdout unless it is a
    terminal (``dashboard_line``)."""
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
    line = dashboard_line(args.host, args.port, secret, path, sys.stdout.isatty())
    print(line, flush=True)


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
            "riskstream evaluate needs the evaluation extras: pip install 'riskstream[train]' "
            f"(in a checkout: pip install -e '.[train]') ({exc})",
            file=sys.stderr,
        )
        return 2
    result: int = evaluate_main(list(argv), prog="riskstream evaluate")
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


DESCRIPTION = (
    "Live risk scores from a recurrent model: each event an entity's client posts advances its "
    "state one step through an ONNX model (state in Redis, every score logged to SQL). Every "
    "command reads the same settings from the environment (see `riskstream serve --help`)."
)
# The commands with parsers of their own: riskstream <command> --help shows theirs.
DELEGATED = {
    "keys": "create, list and revoke API keys (docs/auth.md)",
    "demo": "replay PhysioNet ICU patients through a running service: a live ward",
    "bench": "load-test a server, its own or --url; prints JSON figures (docs/performance.md)",
    "evaluate": "score an event table with a model artifact as the service steps it "
    "(needs the train extra)",
    "replay": "rebuild entities' states from the event log (docs: README, Replay and STATE_TTL)",
    "adapt": "adapt a model artifact to a site's own events, a file or --from-log (needs the "
    "train extra)",
}
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def version() -> str:
    """The package's version and the default model's name and version (its manifest)."""
    import json

    from riskstream import __version__
    from riskstream.settings import DEFAULT_MODEL_DIR

    try:
        manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
        model = f"{manifest['name']} {manifest['version']}"
    except (OSError, ValueError, KeyError) as exc:
        model = f"unreadable ({exc})"
    return f"riskstream {__version__} (default model {model})"


def _shown(value: object) -> str:
    import json
    from datetime import datetime
    from pathlib import Path

    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return str(value)


def settings_help(width: int | None = None) -> str:
    """Every setting, from the settings class's own field descriptions and defaults."""
    import shutil
    import textwrap

    width = width or max(70, min(100, shutil.get_terminal_size().columns - 2))
    from riskstream.settings import DEFAULT_MODEL_DIR, Settings

    lines = ["settings (environment variables; the README's Settings section has more):"]
    for name, field in Settings.model_fields.items():
        if name == "model_dir":
            default = f"the bundled model, {DEFAULT_MODEL_DIR.parent.name}/{DEFAULT_MODEL_DIR.name}"
        else:
            default = _shown(field.get_default(call_default_factory=True))
        text = f"{field.description} (default: {default})"
        lines += textwrap.wrap(
            text,
            width,
            initial_indent=f"  {name.upper():<26}",
            subsequent_indent=" " * 28,
            break_on_hyphens=False,  # "comma-separated" stays one word
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    import textwrap

    parser = argparse.ArgumentParser(prog="riskstream", description=DESCRIPTION)
    parser.add_argument(
        "--version",
        action="version",
        version=version(),
        help="print the version and the default model's, and exit",
    )
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="one of these (riskstream COMMAND --help tells more):",
    )

    serve = commands.add_parser(
        "serve",
        help="run the service (SQLite and an embedded Redis when their URLs are unset)",
        description=textwrap.fill(
            "Migrate the database, then run the service with uvicorn. With no REDIS_URL one "
            "embedded Redis serves every worker; with no DATABASE_URL, SQLite in DATA_DIR. The "
            "first start creates an admin API key (DATA_DIR/admin.key) and prints the "
            "dashboard's signed-in URL.",
            78,
        ),
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s; AUTH=false only on a loopback one)",
    )
    serve.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes sharing one Redis (default: %(default)s)",
    )
    serve.add_argument(
        "--log-level", default="info", choices=LOG_LEVELS, help="log level (default: %(default)s)"
    )
    serve.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="log every request (default: off)",
    )
    serve.add_argument(
        "--proxy-headers",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="trust X-Forwarded-For/-Proto from FORWARDED_ALLOW_IPS (behind a reverse proxy)",
    )

    dead = commands.add_parser(
        "dead-letters",
        help="outbox entries the database refused: list them or replay them",
        description="The outbox's dead letters, on the Redis `serve` uses (REDIS_URL, else the "
        "embedded one in DATA_DIR; KEY_PREFIX).",
    )
    actions = dead.add_subparsers(
        dest="action", required=True, metavar="ACTION", help="one of these:"
    )
    actions.add_parser(
        "list", help="one JSON line per dead letter, oldest first", description="List them."
    )
    replay = actions.add_parser(
        "replay",
        help="move dead letters back to the outbox to be drained again (all if no --id)",
        description="Move dead letters back to the outbox; prints how many.",
    )
    replay.add_argument(
        "--id", action="append", metavar="ID", help="a dead letter's id (repeat for several)"
    )

    for name, text in DELEGATED.items():
        commands.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else None
    if command == "evaluate":
        return _evaluate(argv[1:])
    if command == "adapt":
        return _adapt(argv[1:])
    if command == "demo":
        from riskstream.demo import main as demo_main

        demo_result: int = demo_main(list(argv[1:]))
        return demo_result
    if command == "bench":
        from riskstream.bench import main as bench_main

        bench_result: int = bench_main(list(argv[1:]))
        return bench_result
    if command == "keys":
        from riskstream.keys_cli import main as keys_main

        return keys_main(argv[1:])
    if command == "replay":
        from riskstream.replay_cli import main as replay_main

        return replay_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    from riskstream.logs import configure
    from riskstream.settings import Settings

    # one format for every line, ours and uvicorn's (LOG_FORMAT: text or json)
    configure(Settings().log_format, getattr(args, "log_level", "info"))
    if args.command == "serve":
        return _serve(args)
    if args.command == "dead-letters":
        return _dead_letters(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
