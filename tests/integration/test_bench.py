"""``riskstream bench`` end to end: a short real run against a server it starts itself."""

from __future__ import annotations

import json

import pytest
from riskstream.bench import main, parse_histogram

pytestmark = pytest.mark.slow


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    code = main(["--duration", "2", "--warmup", "0.5", "--entities", "300", *args])
    out = capsys.readouterr().out.strip().splitlines()
    assert out, "bench printed nothing"
    result = json.loads(out[-1])
    assert code == 0, result
    return result


def _sane(result: dict[str, object], mode: str) -> None:
    assert result["mode"] == mode
    assert result["unexpected"] == 0, result["unexpected_by_kind"]
    assert result["errors"] == {}
    events = result["events"]
    assert isinstance(events, int) and events > 0
    assert isinstance(result["events_per_s"], float) and result["events_per_s"] > 0
    latency = result["latency_ms"]
    assert isinstance(latency, dict)
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    statuses = result["status_counts"]
    assert isinstance(statuses, dict)
    assert set(statuses) <= {"200", "409"}
    assert sum(statuses.values()) == events
    kinds = result["kinds"]
    assert isinstance(kinds, dict) and kinds["new"] > 0
    assert statuses.get("409", 0) == kinds.get("late", 0)
    end_to_end = result["end_to_end"]
    assert isinstance(end_to_end, dict) and end_to_end["drained"] is True
    batch = result["batch_size"]
    if batch is not None:  # the server exposes riskstream_batch_size
        assert isinstance(batch, dict) and batch["count"] > 0


def test_single_event_posts(capsys: pytest.CaptureFixture[str]) -> None:
    result = _run(
        capsys,
        "--mode",
        "single",
        "--concurrency",
        "8",
        "--dup-rate",
        "0.05",
        "--late-rate",
        "0.05",
    )
    _sane(result, "single")
    assert result["concurrency"] == 8 and result["workers"] == 1 and result["batching"] is True
    assert result["requests"] == result["events"]


def test_bulk_posts_per_request_mode(capsys: pytest.CaptureFixture[str]) -> None:
    result = _run(
        capsys,
        "--mode",
        "bulk",
        "--bulk-size",
        "100",
        "--concurrency",
        "2",
        "--no-batching",
        "--dup-rate",
        "0.05",
        "--late-rate",
        "0.05",
    )
    _sane(result, "bulk")
    assert result["batching"] is False
    assert result["events"] == 100 * result["requests"]


def test_parse_histogram_sums_over_labels() -> None:
    text = "\n".join(
        [
            "# TYPE riskstream_batch_size histogram",
            'riskstream_batch_size_bucket{le="1.0"} 2.0',
            'riskstream_batch_size_bucket{le="+Inf"} 5.0',
            "riskstream_batch_size_count 5.0",
            "riskstream_batch_size_sum 12.0",
            "riskstream_batch_size_created 1.7e9",
        ]
    )
    parsed = parse_histogram(text, "riskstream_batch_size")
    assert parsed == {"count": 5.0, "sum": 12.0, "buckets": {"1.0": 2.0, "+Inf": 5.0}}
