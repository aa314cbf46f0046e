"""The machine's own ceilings, measured beside the bench figures: ``python -m app.bench.calibrate``.

Prints JSON: seconds for a 10M-iteration Python loop (how fast this CPU runs Python today), the
requests/s of a FastAPI endpoint that does nothing (one uvicorn worker, the bench's client at
concurrency 64), and onnxruntime steps/s of a model (one thread) at a few batch sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
from fastapi import FastAPI

from app.adapters.onnx_model import OnnxRiskModel
from app.bench.client import RawConnection
from app.bench.server import PROJECT_ROOT, cpu_seconds, free_port
from app.settings import DEFAULT_MODEL_DIR


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
    command = [sys.executable, "-m", "uvicorn", "app.bench.calibrate:empty_app", "--factory"]
    command += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    server = subprocess.Popen(command, cwd=PROJECT_ROOT)
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/empty", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        cpu = cpu_seconds([server.pid])
        done = asyncio.run(_hammer(port, concurrency, seconds))
        cpu = cpu_seconds([server.pid]) - cpu
    finally:
        server.terminate()
        server.wait(10)
    return {
        "requests_per_s": round(done / seconds, 1),
        "server_cpu_ms_per_request": cpu / done * 1e3,
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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.bench.calibrate", description=__doc__)
    p.add_argument("--model", type=Path, action="append", help="model folder (repeatable)")
    args = p.parse_args(argv)
    result = {
        "python_loop_10M_s": round(python_loop(), 3),
        "empty_fastapi_endpoint": empty_endpoint(),
        "onnxruntime_steps_per_s": {
            str(d): model_steps(d) for d in (args.model or [DEFAULT_MODEL_DIR])
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
