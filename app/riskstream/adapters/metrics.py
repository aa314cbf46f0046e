"""Prometheus series of the service. One registry per app; across worker processes the
client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by ``riskstream serve``) sums them."""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http = Histogram(
            "riskstream_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            buckets=_LATENCY,
            registry=r,
        )
        self.model = Histogram(
            "riskstream_model_step_seconds", "One onnxruntime call", buckets=_LATENCY, registry=r
        )
        self.batch_size = Histogram(
            "riskstream_batch_size", "Events per model call", buckets=_SIZES, registry=r
        )
        self.request_batch = Histogram(
            "riskstream_scored_batch_events",
            "Events per engine batch (all requests gathered)",
            buckets=_SIZES,
            registry=r,
        )
        self.queue_wait = Histogram(
            "riskstream_queue_wait_seconds",
            "Time an event waited for its batch",
            buckets=_LATENCY,
            registry=r,
        )
        self.conflicts = Counter(
            "riskstream_cas_conflicts", "Lost compare-and-sets (retried)", registry=r
        )
        self.duplicate = Counter("riskstream_duplicates", "Re-sent event ids", registry=r)
        self.late = Counter(
            "riskstream_out_of_order", "Events rejected as earlier than the last", registry=r
        )
        self.backlog = Gauge(
            "riskstream_outbox_backlog",
            "Scores committed but not yet in SQL",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.dead_letters_total = Counter(
            "riskstream_dead_letters",
            "Outbox entries moved to the dead letters (refused by the database or undecodable)",
            registry=r,
        )
        self.dead_letters_gauge = Gauge(
            "riskstream_dead_letters_waiting",
            "Dead letters waiting for an operator (riskstream dead-letters list)",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.ready = Gauge(
            "riskstream_ready",
            "1 while this process can reach Redis and the database (/readyz 200), else 0; "
            "set at each scrape",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.redis_emptied_total = Counter(
            "riskstream_redis_emptied",
            "Times this process found Redis emptied (its instance marker gone)",
            registry=r,
        )
        self.rehydrated_total = Counter(
            "riskstream_rehydrated",
            "Entity states rebuilt from the event log before an event (Redis emptied, expired "
            "or another model version)",
            registry=r,
        )
        self.rehydrated_events = Counter(
            "riskstream_rehydrated_events", "Events replayed to rehydrate states", registry=r
        )
        self.rehydration_failed_total = Counter(
            "riskstream_rehydration_failed",
            "Entities without a state scored afresh because the event log was unreachable",
            registry=r,
        )
        self.redis = Histogram(
            "riskstream_redis_seconds", "Redis round trips", ["op"], buckets=_LATENCY, registry=r
        )
        self.unreadable = Counter(
            "riskstream_unreadable_records",
            "Stored records a reader could not render and skipped",
            ["view"],
            registry=r,
        )
        self.sql = Histogram(
            "riskstream_sql_seconds", "SQL statements", ["op"], buckets=_LATENCY, registry=r
        )

    # -- EngineStats ---------------------------------------------------------------------
    def model_step(self, batch: int, seconds: float) -> None:
        self.model.observe(seconds)
        self.batch_size.observe(batch)

    def batch(self, events: int, queue_wait_s: float) -> None:
        self.request_batch.observe(events)
        self.queue_wait.observe(queue_wait_s)

    def cas_conflicts(self, count: int) -> None:
        self.conflicts.inc(count)

    def duplicates(self, count: int) -> None:
        self.duplicate.inc(count)

    def out_of_order(self, count: int) -> None:
        self.late.inc(count)

    def rehydrated(self, entities: int, events: int) -> None:
        self.rehydrated_total.inc(entities)
        self.rehydrated_events.inc(events)

    def rehydration_failed(self, entities: int) -> None:
        self.rehydration_failed_total.inc(entities)

    # -- DrainStats ----------------------------------------------------------------------
    def dead_lettered(self, count: int) -> None:
        self.dead_letters_total.inc(count)

    def dead_letters_waiting(self, count: int) -> None:
        self.dead_letters_gauge.set(count)

    def redis_emptied(self) -> None:
        self.redis_emptied_total.inc()

    # -- adapters ------------------------------------------------------------------------
    def observe_redis(self, op: str, seconds: float) -> None:
        self.redis.labels(op=op).observe(seconds)

    def observe_sql(self, op: str, seconds: float) -> None:
        self.sql.labels(op=op).observe(seconds)

    def unreadable_record(self, view: str) -> None:
        self.unreadable.labels(view=view).inc()

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
