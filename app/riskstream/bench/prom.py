"""Reading Prometheus text: the server's batch-size histogram and outbox gauge."""

from __future__ import annotations

import contextlib
import math
from typing import Any


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
