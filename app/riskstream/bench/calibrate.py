"""The machine's own ceilings, measured beside the bench figures.

Run as ``python -m riskstream.bench.calibrate``.

Prints JSON: seconds for a 10M-iteration Python loop (how fast this CPU runs Python today), the
requests/s of a FastAPI endpoint that does nothing (one uvicorn worker, the bench's client at
concurrency 64), onnxruntime steps/s of a model (one thread) at a few batch sizes, and where an
event's CPU goes without HTTP: the engine (state load, model step, commit) per event at a few
batch sizes, and the score log's append per score (Redis and SQL from ``REDIS_URL`` /
``DATABASE_URL``, else the embedded defaults in a temporary folder); and the rate limit's CPU
per request (this process's, and Redis's from ``INFO cpu``), with tokens leased in chunks
(``RATE_LIMIT_LEASE_S=0.1``, the default) and asking Redis on every event-loop turn (``0``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import httpx
import numpy as np
import redis.asyncio as aioredis
from fastapi import FastAPI

from riskstream.adapters.embedded_redis import EmbeddedRedis
from riskstream.adapters.onnx_model import OnnxRiskModel
from riskstream.adapters.rate_limit import RedisRateLimiter
from riskstream.bench.client import RawConnection
from riskstream.bench.server import cpu_seconds, delete_keys, free_port
from riskstream.bootstrap import open_services
from riskstream.core.domain import Event, LoggedScore, Outcome, Score
from riskstream.core.rate_leases import TokenLeases
from riskstream.services import Services
from riskstream.settings import DEFAULT_MODEL_DIR, Settings


def empty_app() -> FastAPI:
    app = FastAPI()

    @app.get("/empty")
    async def empty() -> dict[str, bool]:
        return {"ok": True}

    return app


def python_loop() -> float:
    started = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - started


async def _hammer(port: int, concurrency: int, seconds: float) -> int:
    done = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        connection = RawConnection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                status, _ = await connection.request("GET", "/empty", b"", "application/json")
                done += status == 200
        finally:
            await connection.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return done


def empty_endpoint(concurrency: int = 64, seconds: float = 5.0) -> dict[str, float]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "riskstream.bench.calibrate:empty_app", "--factory"]
    command += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    server = subprocess.Popen(command)
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/empty", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the empty FastAPI app did not start")
        cpu = cpu_seconds([server.pid])
        done = asyncio.run(_hammer(port, concurrency, seconds))
        cpu = cpu_seconds([server.pid]) - cpu
    finally:
        server.terminate()
        server.wait(10)
    return {
        "requests_per_s": round(done / seconds, 1),
        "server_cpu_ms_per_request": round(cpu / max(done, 1) * 1e3, 4),
    }


def model_steps(model_dir: Path, batches: Sequence[int] = (1, 64, 256)) -> dict[str, float]:
    model = OnnxRiskModel(model_dir, threads=1)
    features = len(model.manifest.features)
    rates = {}
    for batch in batches:
        x = np.full((batch, features), np.nan, np.float32)  # (B, F)
        x[:, :8] = 1.0
        dt = np.ones((batch, 1), np.float32)  # (B, 1)
        states = {
            s.name: np.zeros((s.shape[0], batch, s.shape[1]), np.float32)  # (L, B, H)
            for s in model.manifest.states
        }
        for _ in range(3):
            model.step(x, dt, states)
        calls = max(5, 2000 // batch)
        started = time.perf_counter()
        for _ in range(calls):
            model.step(x, dt, states)
        rates[f"batch_{batch}"] = round(calls * batch / (time.perf_counter() - started), 1)
    return rates


async def _engine_cpu(services: Services, batches: Sequence[int], events: int) -> dict[str, float]:
    """CPU ms per event of ``engine.score`` (this process; the drain stopped), by batch size."""
    out = {}
    # eight features, each drawn inside its plausible range (the manifest's, else [0, 1])
    spans = [f.range or (0.0, 1.0) for f in services.model.manifest.features[:8]]
    names = services.model.manifest.feature_names
    rng = random.Random(0)
    entities = [f"calibrate-{i}" for i in range(10_000)]
    clock = dict.fromkeys(entities, 1.79e9)
    for batch in batches:
        rounds = max(3, events // batch)
        cpu = 0.0
        for r in range(rounds + 2):
            chosen = rng.sample(entities, batch)
            for e in chosen:
                clock[e] += 3600.0
            batch_events = [
                Event(
                    e,
                    f"{r}-{e}",
                    clock[e],
                    {n: lo + rng.random() * (hi - lo) for n, (lo, hi) in zip(names, spans)},
                )
                for e in chosen
            ]
            started = time.process_time()
            results = await services.engine.score(batch_events)
            if r >= 2:  # two warm-up rounds
                cpu += time.process_time() - started
            failed = [x for x in results if not isinstance(x, Outcome)]
            if failed:
                raise RuntimeError(f"calibration events failed: {failed[:3]}")
        out[f"batch_{batch}"] = round(cpu / (rounds * batch) * 1e3, 4)
    return out


async def _append_cpu(services: Services, rows: int, batch: int) -> float:
    """CPU ms per score of ``SqlScoreLog.append`` in batches (all threads of this process)."""
    rng = random.Random(0)
    names = services.model.manifest.feature_names
    records = [
        LoggedScore(
            Score(
                uuid.uuid4().hex,
                f"e{i}",
                f"x{i}",
                1,
                1.79e9 + i,
                1.79e9 + i,
                "m",
                "1",
                {"aki_48h": rng.random()},
            ),
            {n: rng.random() for n in names[:8]},
        )
        for i in range(rows + batch)
    ]
    await services.score_log.append(records[:batch])
    started = time.process_time()
    new = 0
    for i in range(batch, rows + batch, batch):
        new += await services.score_log.append(records[i : i + batch])
    cpu = time.process_time() - started
    if new != rows:
        raise RuntimeError(f"the score log took {new} of {rows} new scores")
    return round(cpu / rows * 1e3, 4)


def components(
    settings: Settings,
    *,
    batches: Sequence[int] = (1, 16, 64, 512),
    events: int = 5_000,
    rows: int = 20_000,
) -> dict[str, object]:
    async def measure() -> dict[str, object]:
        async with open_services(settings) as services:
            await services.drainer.stop(flush=False)
            return {
                "redis": "external" if settings.redis_url else "embedded",
                "database": settings.resolved_database_url().split(":", 1)[0],
                "engine_cpu_ms_per_event": await _engine_cpu(services, batches, events),
                "score_log_cpu_ms_per_score": await _append_cpu(services, rows, min(rows, 1_000)),
            }

    return asyncio.run(measure())


async def _redis_cpu(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _cpu_per_call(
    call: Callable[[], Awaitable[None]], client: aioredis.Redis, concurrency: int, calls: int
) -> tuple[float, float]:
    """µs of CPU per ``call`` (this process, Redis), ``concurrency`` at once."""

    async def rounds(n: int) -> None:
        for _ in range(n):
            await asyncio.gather(*(call() for _ in range(concurrency)))

    await rounds(20)  # warm-up: connections, the script cached
    n = max(1, calls // concurrency)
    redis_before, started = await _redis_cpu(client), time.process_time()
    await rounds(n)
    worker = time.process_time() - started
    redis = await _redis_cpu(client) - redis_before
    return round(worker / (n * concurrency) * 1e6, 2), round(redis / (n * concurrency) * 1e6, 2)


async def rate_limit_cpu(
    redis_url: str, prefix: str, *, concurrencies: Sequence[int] = (1, 64), calls: int = 20_000
) -> dict[str, dict[str, float]]:
    """µs of CPU per request's rate-limit charge, never refused (as in the bench's own server:
    rate and burst 1e9): this process's and Redis's. At c=64 the 64 charges come in one turn
    (without leases: one gathered call per turn); ``noop`` is the same loop charging nothing."""
    client = aioredis.Redis.from_url(redis_url)
    out: dict[str, dict[str, float]] = {}

    async def noop() -> None:
        pass

    try:
        for concurrency in concurrencies:
            row: dict[str, float] = {}
            row["noop_worker"], _ = await _cpu_per_call(noop, client, concurrency, calls)
            for lease_s in (0.0, 0.1):
                leases = TokenLeases(RedisRateLimiter(client, prefix=prefix), lease_s=lease_s)
                charge = functools.partial(leases.check, "calibrate", cost=1, rate=1e9, burst=10**9)
                worker, redis = await _cpu_per_call(charge, client, concurrency, calls)
                await leases.close()
                row[f"lease_{lease_s:g}_s_worker"] = worker
                row[f"lease_{lease_s:g}_s_redis"] = redis
            out[f"c{concurrency}"] = row
    finally:
        await client.aclose()
    return out


def rate_limit(settings: Settings) -> dict[str, dict[str, float]]:
    if settings.redis_url is not None:
        return asyncio.run(rate_limit_cpu(str(settings.redis_url), settings.key_prefix))
    embedded = EmbeddedRedis(settings.data_dir / "rate-limit-redis")
    url = embedded.start()
    try:
        return asyncio.run(rate_limit_cpu(url, settings.key_prefix))
    finally:
        embedded.stop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m riskstream.bench.calibrate", description=__doc__)
    p.add_argument("--model", type=Path, action="append", help="model folder (repeatable)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="riskstream-calibrate-") as tmp:
        settings = Settings(data_dir=Path(tmp), key_prefix=f"calibrate-{uuid.uuid4().hex[:8]}")
        result = {
            "python_loop_10M_s": round(python_loop(), 3),
            "empty_fastapi_endpoint": empty_endpoint(),
            "onnxruntime_steps_per_s": {
                str(d): model_steps(d) for d in (args.model or [DEFAULT_MODEL_DIR])
            },
            "components": components(settings),
            "rate_limit_cpu_us_per_request": rate_limit(settings),
        }
        if settings.redis_url:
            delete_keys(settings.redis_url, settings.key_prefix)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
