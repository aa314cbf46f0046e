"""The cost of an explanation: ``python -m riskstream.bench.explain`` prints one JSON line per
stay length.

Posts the longest PhysioNet sample patient's first L hourly events as an entity of its own, for
each L of ``--lengths``, into a server (its own ``riskstream serve`` on the embedded defaults in a
temporary folder, or ``--url`` with ``--key``), waits until the log holds them, then asks for the
explanation of the last event ``--calls`` times after ``--warmup`` calls, one at a time, and
reports the median and 90th percentile of the round trip in ms. An explanation replays the stay
up to the event (one model call per earlier event) and then makes one batched call for the event
and each input withheld, so its cost grows with the stay's length.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from riskstream.bench.server import ServerProcess
from riskstream.demo import DEFAULT_DATA, load_patients


def _stay(client: httpx.Client, entity: str, rows: list[Any], timeout: float = 60.0) -> int:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=len(rows) + 1)
    events = [
        {
            "entity_id": entity,
            "event_id": f"h{hour}",
            "time": (start + timedelta(hours=k)).isoformat(),
            "values": values,
        }
        for k, (hour, values) in enumerate(rows)
    ]
    response = client.post("/v1/events", json=events)
    response.raise_for_status()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # the outbox reaches SQL shortly after
        page = client.get(f"/v1/entities/{entity}/scores", params={"limit": 1000}).json()
        if len(page["scores"]) == len(rows):
            return len(rows)
        time.sleep(0.05)
    raise SystemExit(f"{entity}: the log did not reach {len(rows)} scores in {timeout:g} s")


def measure(url: str, key: str | None, lengths: list[int], calls: int, warmup: int) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        model = client.get("/v1/model").json()
        features = [f["name"] for f in model["features"]]
        patients = load_patients(DEFAULT_DATA, features, 200, seed=0, admit_every=1)
        longest = max(patients, key=lambda p: len(p.rows))
        tag = datetime.now(UTC).strftime("%H%M%S")
        for length in lengths:
            rows = longest.rows[:length]
            entity = f"explain-{tag}-{len(rows)}"
            _stay(client, entity, rows)
            path = f"/v1/entities/{entity}/scores/{len(rows)}/explanation"
            times = []
            for i in range(warmup + calls):
                started = time.perf_counter()
                response = client.get(path)
                elapsed = time.perf_counter() - started
                response.raise_for_status()
                if i >= warmup:
                    times.append(elapsed * 1000)
            body = response.json()
            inputs = len(next(iter(body["outputs"].values()))["inputs"])
            times.sort()
            print(
                orjson.dumps(
                    {
                        "stay_events": len(rows),
                        "inputs": inputs,
                        "calls": calls,
                        "median_ms": round(statistics.median(times), 2),
                        "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2),
                        "reproduced": body["reproduced"],
                    }
                ).decode(),
                flush=True,
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (else one of its own)")
    parser.add_argument("--key", help="an API key with ingest and read (with --url)")
    parser.add_argument("--lengths", default="1,24,72,168", help="stay lengths, comma-separated")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    lengths = [int(x) for x in args.lengths.split(",")]
    if args.url:
        measure(args.url, args.key, lengths, args.calls, args.warmup)
        return
    with tempfile.TemporaryDirectory(prefix="riskstream-explain-") as folder:
        # the embedded defaults, whatever this shell's environment says
        dropped = {"REDIS_URL", "DATABASE_URL", "MODEL_DIR"}
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        env["DATA_DIR"] = str(Path(folder) / "data")
        server = ServerProcess(env, Path(folder) / "server.log", inherit=False)
        try:
            measure(server.url, server.admin_key(), lengths, args.calls, args.warmup)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
