"""One bench run: client tasks send the scenario's events; the tally becomes the report."""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from riskstream.bench.client import HttpError, HttpxConnection, RawConnection
from riskstream.bench.prom import histogram_delta, parse_gauge, parse_histogram
from riskstream.bench.scenario import DUPLICATE, LATE, NEW, Patient, Scenario, expected
from riskstream.progress import bar


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
        self.quiet = bool(getattr(args, "quiet", False))  # no progress bars
        key = getattr(args, "key", None)  # sent on every request, data and control alike
        self.headers: dict[str, str] = {"Authorization": f"Bearer {key}"} if key else {}

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
        if not expected(kind, status, self.accept_late):
            t.unexpected[f"{kind}:{status}"] += 1
            if body is not None and len(t.errors) < 20:
                t.errors[f"{kind}:{status}:{body[:200].decode(errors='replace')}"] += 1

    async def send(self, conn: Any, path: str, body: bytes) -> tuple[int, bytes, float] | None:
        """POST ``body``: status, payload and latency, or None (counted) if the transport failed."""
        started = time.perf_counter()
        try:
            status, payload = await conn.request("POST", path, body, "application/json")
        except (HttpError, OSError) as exc:
            if self.measuring:
                self.tally.errors[f"transport:{type(exc).__name__}:{str(exc)[:80]}"] += 1
            await asyncio.sleep(0.05)
            return None
        return status, payload, time.perf_counter() - started

    async def single_task(self, k: int, conn: Any, owned: list[Patient]) -> None:
        rng = random.Random(self.scenario.seed * 7919 + k)
        sc = self.scenario
        while not self.stop:
            p = owned[rng.randrange(len(owned))]
            kind, event = sc.pick(p)
            sent = await self.send(conn, p.path, orjson.dumps(event))
            if sent is None:
                continue
            status, payload, latency = sent
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
            sent = await self.send(conn, "/v1/events", body)
            if sent is None:
                continue
            status, payload, latency = sent
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
        with bar("bench: drain", unit="s", quiet=self.quiet) as shown:
            shown.set_postfix_str("until every score is in SQL", refresh=False)
            return await self._wait_drained(client, timeout, shown)

    async def _wait_drained(self, client: httpx.AsyncClient, timeout: float, shown: Any) -> bool:
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
            shown.update(0.02)
        return False

    async def go(self) -> dict[str, Any]:
        args = self.args
        sc = self.scenario
        patients = sc.patients()
        n = args.concurrency
        shares = [patients[k::n] for k in range(n)]
        self._last_payload = {}
        control = httpx.AsyncClient(base_url=self.url, timeout=30, headers=self.headers)
        data_client: httpx.AsyncClient | None = None
        if args.client == "httpx":
            data_client = httpx.AsyncClient(
                base_url=self.url,
                headers=self.headers,
                timeout=args.request_timeout,
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            )
            conns: list[Any] = [HttpxConnection(data_client) for _ in range(n)]
        else:
            conns = [RawConnection(self.host, self.port, self.headers) for _ in range(n)]
        task: Callable[[int, Any, list[Patient]], Coroutine[Any, Any, None]] = (
            self.single_task if args.mode == "single" else self.bulk_task
        )
        try:
            tasks = [
                asyncio.create_task(task(k, conns[k], shares[k])) for k in range(n) if shares[k]
            ]
            shown = bar(
                "bench: warmup", total=args.warmup + args.duration, unit="s", quiet=self.quiet
            )
            with shown:
                if args.warmup > 0:
                    await asyncio.sleep(args.warmup)
                    shown.update(args.warmup)
                before_text = await self.metrics_text(control)
                shown.set_description_str("bench: measure", refresh=False)
                self.measuring = True
                cpu_before = self.cpu_now()
                started = time.perf_counter()
                deadline = started + args.duration
                while not self.stop and time.perf_counter() < deadline:
                    await asyncio.sleep(min(0.05, max(0.0, deadline - time.perf_counter())))
                    shown.n = args.warmup + min(args.duration, time.perf_counter() - started)
                    shown.set_postfix(events=self.tally.events)
                self.stop = True
            http_elapsed = time.perf_counter() - started
            # in-flight requests finish (bounded by the request timeout)
            _, late = await asyncio.wait(tasks, timeout=args.request_timeout + 5)
            for t in late:
                t.cancel()
            self.measuring = False
            ended = time.perf_counter()
            cpu_after = self.cpu_now()
            drained = await self.wait_drained(control, args.drain_timeout)
            drain_elapsed = time.perf_counter() - started
            after_text = await self.metrics_text(control)
        finally:
            for c in conns:
                await c.close()
            if data_client is not None:
                await data_client.aclose()
            await control.aclose()
        self.cpu = {k: round(cpu_after[k] - cpu_before[k], 3) for k in cpu_before}
        return self.report(
            http_elapsed, ended - started, drain_elapsed, drained, before_text, after_text
        )

    def cpu_now(self) -> dict[str, float]:
        """CPU seconds so far of this load generator and (if known) of the server's processes."""
        now = {"bench": time.process_time()}
        if self.server_cpu is not None:
            now["server"] = self.server_cpu()
        return now

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
            "cpu_s": self.cpu,
            "server_cpu_ms_per_event": round(self.cpu["server"] * 1000 / t.events, 4)
            if "server" in self.cpu and t.events
            else None,
            "url": self.url,
            "server_pid": self.server_pid,
        }

    backend: str = "external"
    server_pid: int | None = None
    # CPU seconds used so far by the server's processes (its own server only)
    server_cpu: Callable[[], float] | None = None
    cpu: dict[str, float]
