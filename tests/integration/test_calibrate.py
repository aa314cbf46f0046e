"""The calibration the performance figures stand beside: real model, Redis and SQL."""

from __future__ import annotations

from pathlib import Path

from riskstream.bench.calibrate import components, model_steps, rate_limit_cpu
from riskstream.settings import Settings


def test_model_steps_per_second_for_each_batch_size(tiny_model_dir: Path) -> None:
    rates = model_steps(tiny_model_dir, batches=(1, 8))
    assert set(rates) == {"batch_1", "batch_8"}
    assert all(rate > 0 for rate in rates.values())


def test_engine_and_score_log_cpu_per_event(settings: Settings) -> None:
    found = components(settings, batches=(1, 4), events=8, rows=50)
    engine = found["engine_cpu_ms_per_event"]
    assert isinstance(engine, dict) and set(engine) == {"batch_1", "batch_4"}
    assert all(ms > 0 for ms in engine.values())
    per_score = found["score_log_cpu_ms_per_score"]
    assert isinstance(per_score, float) and per_score > 0


async def test_rate_limit_cpu_with_and_without_leases(redis_url: str, key_prefix: str) -> None:
    found = await rate_limit_cpu(redis_url, key_prefix, concurrencies=(1, 8), calls=64)
    assert set(found) == {"c1", "c8"}
    for row in found.values():
        assert set(row) == {
            "noop_worker",
            "lease_0_s_worker",
            "lease_0_s_redis",
            "lease_0.1_s_worker",
            "lease_0.1_s_redis",
        }
        assert row["lease_0_s_worker"] > 0
