"""Locust load test of riskstream: simulated ICU patients sending event streams.

Run it (locust is an extra, not a dependency of the service: ``pip install -e '.[bench]'``),
against a server on this machine only, always bounded by ``-t``::

    riskstream serve --port 8000 &
    locust -f locustfile.py --headless --host http://127.0.0.1:8000 -u 64 -r 16 -t 60s
    # single-event POSTs only, or bulk POSTs only:
    locust -f locustfile.py --headless --host http://127.0.0.1:8000 -u 64 -r 16 -t 60s -T single
    locust -f locustfile.py --headless --host http://127.0.0.1:8000 -u 4 -r 4 -t 60s -T bulk

Every user is one feed (a bedside monitor gateway, say) that owns ``LOCUST_ENTITIES`` patients of
its own (default 150; 64 users × 150 ≈ 10,000 entities) and sends their events one request at a
time, so an entity never has two events in flight: the only 409s are the deliberate late events.
Each patient has its own plausible values (vitals most of the time, labs now and then,
demographics first, some explicit nulls — the same generator as ``riskstream bench``), event times
increasing by random gaps (mean ``LOCUST_GAP_MEAN`` seconds of simulated time), a share
``LOCUST_DUP_RATE`` (default 0.02) of re-sent events that must come back ``"duplicate": true``
and a share ``LOCUST_LATE_RATE`` (default 0.01) of events earlier than the patient's last one,
which must be rejected with 409. Those expected answers count as successes; anything else fails.

Access control (docs/auth.md): every request carries ``Authorization: Bearer
$RISKSTREAM_API_KEY`` (a key with scopes ``ingest`` and ``read``, e.g.
``RISKSTREAM_API_KEY=$(cat riskstream-data/admin.key)``). Mind the key's rate limit
(``RATE_LIMIT_EVENTS_S``, ``RATE_LIMIT_BURST``): past it the server answers 429, counted as
failures.

Other knobs (environment): ``LOCUST_BULK_SIZE`` (events per ``POST /v1/events``, default 100),
``LOCUST_WAIT_MAX`` (seconds a user pauses between requests, uniform from 0; default 0 = as fast
as the server answers).
"""

from __future__ import annotations

import os
import random
import uuid
from datetime import datetime
from typing import Any

import orjson
from locust import FastHttpUser, between, tag, task
from riskstream.bench.scenario import DUPLICATE, LATE, NEW, Patient, Scenario

ENTITIES = int(os.environ.get("LOCUST_ENTITIES", "150"))
BULK_SIZE = int(os.environ.get("LOCUST_BULK_SIZE", "100"))
WAIT_MAX = float(os.environ.get("LOCUST_WAIT_MAX", "0"))
DUP_RATE = float(os.environ.get("LOCUST_DUP_RATE", "0.02"))
LATE_RATE = float(os.environ.get("LOCUST_LATE_RATE", "0.01"))
GAP_MEAN = float(os.environ.get("LOCUST_GAP_MEAN", "900"))
JSON = {"content-type": "application/json"}
API_KEY = os.environ.get("RISKSTREAM_API_KEY", "")

_features: list[str] | None = None


class Feed(FastHttpUser):
    """One feed of ``ENTITIES`` patients; requests one at a time."""

    wait_time = between(0, WAIT_MAX)
    default_headers = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else None

    def on_start(self) -> None:
        global _features
        if _features is None:
            with self.client.get("/v1/model", name="/v1/model", catch_response=True) as r:
                if r.status_code != 200:
                    r.failure(f"GET /v1/model: {r.status_code}")
                    raise RuntimeError("no model manifest")
                _features = [f["name"] for f in orjson.loads(r.content)["features"]]
        self.scenario = Scenario(
            entities=ENTITIES,
            dup_rate=DUP_RATE,
            late_rate=LATE_RATE,
            gap_mean_s=GAP_MEAN,
            seed=random.getrandbits(32),
            features=_features,
            run_id=uuid.uuid4().hex[:10],
        )
        self.patients = self.scenario.patients()
        self.rng = random.Random()

    def _patient(self) -> Patient:
        return self.patients[self.rng.randrange(len(self.patients))]

    @tag("single")
    @task(10)
    def single_event(self) -> None:
        p = self._patient()
        kind, event = self.scenario.pick(p)
        with self.client.post(
            p.path,
            data=orjson.dumps(event),
            headers=JSON,
            name=f"/v1/entities/[id]/events ({kind})",
            catch_response=True,
        ) as r:
            status = r.status_code
            if kind == LATE:
                if status == 409:
                    r.success()
                else:
                    r.failure(f"late event: expected 409, got {status}")
                return
            if status != 200:
                r.failure(f"{kind}: {status} {r.text[:200]}")
                return
            body = orjson.loads(r.content)
            if kind == DUPLICATE and not body.get("duplicate"):
                r.failure("re-sent event not recognised as a duplicate")
                return
            if kind == NEW:
                p.last_accepted = event
                p.committed_time = p.sent_time
            r.success()

    @tag("bulk")
    @task(1)
    def bulk_events(self) -> None:
        items: list[tuple[str, Patient, dict[str, Any]]] = []
        for _ in range(BULK_SIZE):
            p = self._patient()
            kind, event = self.scenario.pick(p)
            items.append((kind, p, event))
        body = orjson.dumps([{"entity_id": p.entity_id, **e} for _, p, e in items])
        with self.client.post(
            "/v1/events", data=body, headers=JSON, name="/v1/events (bulk)", catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"bulk: {r.status_code} {r.text[:200]}")
                return
            results = orjson.loads(r.content)["results"]
            wrong: list[str] = []
            for (kind, p, event), result in zip(items, results):
                status = result["status"]
                if kind == LATE:
                    if status != 409:
                        wrong.append(f"late event got {status}")
                elif status != 200:
                    wrong.append(f"{kind} event got {status}: {result.get('error')}")
                elif kind == DUPLICATE and not result.get("duplicate"):
                    wrong.append("re-sent event not recognised as a duplicate")
                elif kind == NEW:
                    t = datetime.fromisoformat(event["time"]).timestamp()
                    if p.committed_time is None or t > p.committed_time:
                        p.committed_time, p.last_accepted = t, event
            if wrong:
                r.failure(f"{len(wrong)} of {len(items)} events wrong, e.g. {wrong[0]}")
            else:
                r.success()
