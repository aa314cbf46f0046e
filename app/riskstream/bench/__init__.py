"""``riskstream bench``: a bounded load test of the service, printed as one JSON object.

Starts its own server (``python -m riskstream.cli serve`` in a subprocess, fresh ``DATA_DIR``) or
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

With its own server, the JSON also has the CPU seconds the server's processes (workers and the
embedded redis-server included) and the load generator used in the measured window, and the
server's CPU milliseconds per event: a figure that stays comparable when the machine is busy.

Modules: ``scenario`` (the simulated patients), ``client`` (HTTP), ``run`` (the load and the
report), ``prom`` (reading ``/metrics``), ``server`` (a server subprocess), ``cli``.
"""

from riskstream.bench.cli import main
from riskstream.bench.prom import parse_histogram

__all__ = ["main", "parse_histogram"]
