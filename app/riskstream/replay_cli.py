"""``riskstream replay``: rebuild entities' recurrent states from the event log (SQL) into Redis.

Uses the same settings as ``serve`` (``DATABASE_URL``/``DATA_DIR``, ``REDIS_URL`` or the embedded
Redis, ``KEY_PREFIX``, ``MODEL_DIR``, ``DEDUP_HISTORY``, ``STATE_TTL``, ``ALERT_THRESHOLDS``).
Each state is written with the compare-and-set of live events, so it is safe while the service
runs. The report (JSON, one line) goes to stdout; progress and what was skipped to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from riskstream.core.errors import ModelContractError, RiskstreamError
from riskstream.core.replay import Progress, Replayer, ReplayReport
from riskstream.progress import bar


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="riskstream replay",
        description="rebuild entities' states from the event log, batched across entities",
    )
    parser.add_argument("--entity", action="append", metavar="ID", help="repeat for several")
    parser.add_argument("--all", action="store_true", help="every entity with logged events")
    parser.add_argument(
        "--model",
        metavar="NAME/VERSION",
        help="the model to replay with: a folder, or NAME/VERSION beside MODEL_DIR's "
        "(models/NAME/VERSION); default: MODEL_DIR's",
    )
    parser.add_argument("--batch", type=int, default=512, help="entities per model call")
    parser.add_argument(
        "--threads", type=int, default=min(2, os.cpu_count() or 1), help="onnxruntime threads"
    )
    parser.add_argument(
        "--horizon-hours",
        type=float,
        help="replay only the events within this many hours of each entity's last one "
        "(default: the manifest's memory_horizon_hours; none: the whole stay, exact)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar (none either when stderr is no terminal)",
    )
    return parser


def model_dir(default: Path, asked: str | None) -> Path:
    """``--model``: a model folder, or NAME/VERSION in the folder of folders MODEL_DIR is in."""
    if asked is None:
        return default
    if Path(asked).is_dir():
        return Path(asked)
    name, _, version = asked.partition("/")
    if not name or not version or "/" in version:
        raise ValueError(f"--model {asked!r} is neither a folder nor NAME/VERSION")
    folder = default.parent.parent / name / version
    if not folder.is_dir():
        raise ValueError(f"no model {asked} (looked in {folder})")
    return folder


def _progress_bar(quiet: bool) -> tuple[Progress, Callable[[], None]]:
    """The one progress bar of the long commands (``riskstream.progress``): entities, events."""
    shown = bar("replay", unit=" entities", quiet=quiet)
    events = [0]

    def update(entities: int, stepped: int) -> None:
        events[0] += stepped
        shown.update(entities)
        shown.set_postfix(events=events[0], refresh=False)

    return update, shown.close


def _report(report: ReplayReport) -> dict[str, Any]:
    return {
        "entities": report.entities,
        "installed": report.installed,
        "events": report.events,
        "conflicts": report.conflicts,
        "skipped": len(report.skipped),
        "seconds": round(report.seconds, 3),
        "events_per_s": round(report.events_per_s, 1),
        "model_seconds": round(report.model_seconds, 3),
        "model_events_per_s": round(report.events / report.model_seconds, 1)
        if report.model_seconds > 0
        else 0.0,
    }


async def _run(args: argparse.Namespace, redis_url: str) -> int:
    import redis.asyncio as aioredis

    from riskstream.adapters.onnx_model import OnnxRiskModel
    from riskstream.adapters.redis_store import RedisStateStore
    from riskstream.adapters.sql.database import create_engine, migrate
    from riskstream.adapters.sql.score_log import SqlScoreLog
    from riskstream.bootstrap import thresholds
    from riskstream.settings import Settings

    settings = Settings()
    model = OnnxRiskModel(model_dir(settings.model_dir, args.model), threads=args.threads)
    manifest = model.manifest
    database_url = settings.resolved_database_url()
    await asyncio.to_thread(migrate, database_url)
    sql = create_engine(database_url)
    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=60)
    progress, close = _progress_bar(args.quiet)
    try:
        log = SqlScoreLog(sql)
        store = RedisStateStore(
            client,
            prefix=settings.key_prefix,
            states=manifest.states,
            dedup_history=settings.dedup_history,
            outputs=manifest.output_names,
            feed_length=settings.feed_length,
            state_ttl_s=settings.state_ttl,
        )
        horizon = args.horizon_hours
        replayer = Replayer(
            model,
            log,
            thresholds=thresholds(settings, manifest.output_names),
            dedup_history=settings.dedup_history,
            batch=args.batch,
            horizon_hours=horizon if horizon is not None else manifest.memory_horizon_hours,
        )
        if args.all:
            report = await replayer.replay_all(store, progress=progress)
        else:
            entities = list(dict.fromkeys(args.entity))
            report = await replayer.replay(entities, store, progress=progress)
    finally:
        close()
        await client.aclose()
        await sql.dispose()
    for entity, reason in list(report.skipped.items())[:20]:
        print(f"riskstream replay: skipped {entity}: {reason}", file=sys.stderr)
    if len(report.skipped) > 20:
        print(f"riskstream replay: … and {len(report.skipped) - 20} more", file=sys.stderr)
    print(f"replayed with {manifest.key}", file=sys.stderr)
    sys.stdout.write(orjson.dumps(_report(report)).decode() + "\n")
    return 1 if report.skipped else 0


def main(argv: Sequence[str]) -> int:
    from riskstream.adapters.embedded_redis import EmbeddedRedis
    from riskstream.settings import Settings

    args = _parser().parse_args(list(argv))
    if bool(args.all) == bool(args.entity):
        print("riskstream replay: give --entity ID (repeatable) or --all", file=sys.stderr)
        return 2
    if args.batch < 1 or args.threads < 1:
        print("riskstream replay: --batch and --threads must be at least 1", file=sys.stderr)
        return 2
    settings = Settings()
    embedded: EmbeddedRedis | None = None
    url = settings.redis_url
    try:
        if url is None:
            embedded = EmbeddedRedis(settings.data_dir / "redis")
            url = embedded.start()
        return asyncio.run(_run(args, url))
    except (ValueError, ModelContractError) as exc:
        print(f"riskstream replay: {exc}", file=sys.stderr)
        return 2
    except RiskstreamError as exc:
        print(f"riskstream replay: {exc.message}", file=sys.stderr)
        return 1
    finally:
        if embedded is not None:
            embedded.stop()
