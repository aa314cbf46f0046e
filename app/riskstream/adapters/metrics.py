"""Prometheus series of the service (the list is in README.md, Operations).

One registry per app. With several worker processes (``riskstream serve --workers N``) the
client's multiprocess mode sums them: ``serve`` sets ``PROMETHEUS_MULTIPROC_DIR``, every worker
writes its values to files there, and a scrape of any worker reads them all. Two kinds of series
cannot live in those files and are made at scrape time instead: ``riskstream_build_info`` (a
constant of the code and model, the same in every worker) and ``process_*``, read from ``/proc``
for each live worker process (``pid`` label), found by the files it writes.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from riskstream.core.stats import OUTCOMES, EventOutcome

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
# Scores reach SQL in batches, OUTBOX_PAUSE_MS apart under light load; hours after an outage.
_LAG = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_BYTES = tuple(2**k for k in range(7, 21))  # 128 B .. 1 MiB

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
_FILE_PID = re.compile(r"_(\d+)\.db$")


class BuildInfo:
    """``riskstream_build_info{version, model, model_version, python, onnxruntime} 1``."""

    def __init__(self, labels: Mapping[str, str]) -> None:
        self._labels = dict(labels)

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "riskstream_build_info",
            "The running code and model (always 1; the labels tell)",
            labels=list(self._labels),
        )
        family.add_metric(list(self._labels.values()), 1)
        return [family]


class WorkerProcesses:
    """``process_*`` (CPU seconds, memory, open files, start time) of each worker process,
    labelled ``pid``: this process, and in multiprocess mode every live process that wrote
    metric files to the shared folder (a worker restarted by uvicorn gets a new pid)."""

    def __init__(self, multiproc_dir: str | None) -> None:
        self._dir = multiproc_dir

    def pids(self) -> list[int]:
        found = {os.getpid()}
        if self._dir:
            for path in Path(self._dir).glob("*.db"):
                if (match := _FILE_PID.search(path.name)) is not None:
                    found.add(int(match.group(1)))
        return sorted(pid for pid in found if _alive(pid))

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for pid in self.pids():
            for family in ProcessCollector(
                pid=functools.partial(int, pid), registry=None
            ).collect():
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        return list(families.values())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def build_labels(model_name: str, model_version: str) -> dict[str, str]:
    from riskstream import __version__

    try:
        import onnxruntime

        ort = str(onnxruntime.__version__)
    except ImportError:  # pragma: no cover - a dependency of the service
        ort = ""
    return {
        "version": __version__,
        "model": model_name,
        "model_version": model_version,
        "python": platform.python_version(),
        "onnxruntime": ort,
    }


class Metrics:
    def __init__(self, build: Mapping[str, str] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._build = BuildInfo(build or build_labels("", ""))
        self._processes = WorkerProcesses(os.environ.get(MULTIPROC_DIR))
        for collector in (self._build, self._processes, PlatformCollector(registry=None)):
            r.register(collector)
        self.http = Histogram(
            "riskstream_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            buckets=_LATENCY,
            registry=r,
        )
        self.events_total = Counter(
            "riskstream_events",
            "Events sent to be scored, by what became of them",
            ["outcome"],
            registry=r,
        )
        # every outcome from the start (at 0), so a rate over any of them is defined at once
        self._outcomes = {o: self.events_total.labels(outcome=o) for o in OUTCOMES}
        self.model = Histogram(
            "riskstream_model_step_seconds", "One onnxruntime call", buckets=_LATENCY, registry=r
        )
        self.batch_size = Histogram(
            "riskstream_batch_size",
            "Events per model call (a micro-batch's events, one per entity and round)",
            buckets=_SIZES,
            registry=r,
        )
        self.queue_wait_s = Histogram(
            "riskstream_queue_wait_seconds",
            "Time an event waited for its batch",
            buckets=_LATENCY,
            registry=r,
        )
        self.state_bytes = Histogram(
            "riskstream_state_bytes",
            "Size of an entity's stored state record, per commit (tensors, last scores, alerts)",
            buckets=_BYTES,
            registry=r,
        )
        self.sql_commit_lag = Histogram(
            "riskstream_sql_commit_lag_seconds",
            "From a score's commit in Redis (the event accepted) to its row committed in SQL",
            buckets=_LAG,
            registry=r,
        )
        self.conflicts = Counter(
            "riskstream_cas_conflicts", "Lost compare-and-sets (retried)", registry=r
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

    # -- EngineStats, EventStats, StateStats ------------------------------------------------
    def model_step(self, batch: int, seconds: float) -> None:
        self.model.observe(seconds)
        self.batch_size.observe(batch)

    def queue_wait(self, seconds: float) -> None:
        self.queue_wait_s.observe(seconds)

    def cas_conflicts(self, count: int) -> None:
        self.conflicts.inc(count)

    def events(self, outcome: EventOutcome, count: int) -> None:
        self._outcomes[outcome].inc(count)

    def state_sizes(self, sizes: Sequence[int]) -> None:
        for size in sizes:
            self.state_bytes.observe(size)

    def rehydrated(self, entities: int, events: int) -> None:
        self.rehydrated_total.inc(entities)
        self.rehydrated_events.inc(events)

    def rehydration_failed(self, entities: int) -> None:
        self.rehydration_failed_total.inc(entities)

    # -- DrainStats ----------------------------------------------------------------------
    def sql_commit_lags(self, seconds: Sequence[float]) -> None:
        for lag in seconds:
            self.sql_commit_lag.observe(lag)

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
        if os.environ.get(MULTIPROC_DIR):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            for collector in (self._build, self._processes, PlatformCollector(registry=None)):
                registry.register(collector)
            return generate_latest(registry)
        return generate_latest(self.registry)
