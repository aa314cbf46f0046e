"""The composition root: settings in, a wired application out. Nothing connects at import."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from riskstream import __version__
from riskstream.adapters.embedded_redis import EmbeddedRedis
from riskstream.adapters.metrics import Metrics, build_labels
from riskstream.adapters.onnx_model import OnnxRiskModel
from riskstream.adapters.rate_limit import RedisRateLimiter
from riskstream.adapters.redis_store import RedisOutbox, RedisStateStore
from riskstream.adapters.redis_views import RedisViews
from riskstream.adapters.sql.database import create_engine, migrate
from riskstream.adapters.sql.keys import SqlKeyStore
from riskstream.adapters.sql.score_log import SqlScoreLog
from riskstream.core.alerts import Threshold
from riskstream.core.auth import Authenticator
from riskstream.core.batcher import DirectScorer, MicroBatcher, Scorer
from riskstream.core.drain import OutboxDrainer
from riskstream.core.engine import ScoringEngine
from riskstream.core.explain import Explainer
from riskstream.core.rate_leases import TokenLeases
from riskstream.core.readiness import ReadinessProbe
from riskstream.core.replay import Replayer
from riskstream.core.service import RiskService
from riskstream.services import Services
from riskstream.settings import Settings
from riskstream.startup import wait_for_dependencies
from riskstream.web import admin, entities, errors, events, metrics, openapi, system, views
from riskstream.web.auth import Guard, StreamSlots
from riskstream.web.fast_path import SingleEventFastPath
from riskstream.web.limits import BodySizeLimit
from riskstream.web.request_id import RequestId
from riskstream.web.responses import JSON

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "web" / "static"


def redact(url: str) -> str:
    """A URL fit for the log: without a password it may carry."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def thresholds(settings: Settings, outputs: tuple[str, ...]) -> dict[str, Threshold]:
    unknown = set(settings.alert_thresholds) - set(outputs)
    if unknown:
        raise ValueError(f"ALERT_THRESHOLDS names outputs the model lacks: {sorted(unknown)}")
    levels = {
        o: settings.alert_thresholds.get(o, settings.default_alert_threshold) for o in outputs
    }
    return {o: Threshold(raise_at, clear_below) for o, (raise_at, clear_below) in levels.items()}


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    async with AsyncExitStack() as stack:
        model = OnnxRiskModel(settings.model_dir)
        metrics = Metrics(build_labels(model.manifest.name, model.manifest.version))
        # Under `riskstream serve` the parent process has waited already: this returns at once.
        await asyncio.to_thread(wait_for_dependencies, settings)

        redis_url = settings.redis_url
        if redis_url is None:
            embedded = EmbeddedRedis(settings.data_dir / "redis")
            redis_url = await asyncio.to_thread(embedded.start)
            stack.callback(embedded.stop)
        # Requests beyond the pool wait for a connection (up to the socket timeout) instead of
        # failing with "Too many connections" when many arrive at once.
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url,
            max_connections=settings.redis_max_connections,
            timeout=5,
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=30,
        )
        client = aioredis.Redis.from_pool(pool)
        stack.push_async_callback(client.aclose)

        database_url = settings.resolved_database_url()
        await asyncio.to_thread(migrate, database_url)
        sql = create_engine(database_url)
        stack.push_async_callback(sql.dispose)
        score_log = SqlScoreLog(sql, observe=metrics.observe_sql)

        store = RedisStateStore(
            client,
            prefix=settings.key_prefix,
            states=model.manifest.states,
            dedup_history=settings.dedup_history,
            outputs=model.manifest.output_names,
            feed_length=settings.feed_length,
            state_ttl_s=settings.state_ttl,
            observe=metrics.observe_redis,
            state_sizes=metrics.state_sizes,
        )
        levels = thresholds(settings, model.manifest.output_names)
        replayer = Replayer(
            model,
            score_log,
            thresholds=levels,
            dedup_history=settings.dedup_history,
            horizon_hours=model.manifest.memory_horizon_hours,
        )
        views = RedisViews(client, store.keys, unreadable=metrics.unreadable_record)
        outbox = RedisOutbox(
            client, prefix=settings.key_prefix, claim_idle_ms=settings.outbox_claim_idle_ms
        )
        engine = ScoringEngine(
            model,
            store,
            score_log,
            accept_late_events=settings.accept_late_events,
            max_retries=settings.cas_max_retries,
            max_id_length=settings.max_id_length,
            event_time_min=settings.event_time_min.timestamp(),
            event_time_max_ahead_s=settings.event_time_max_ahead_s,
            stats=metrics,
            thresholds=levels,
            replayer=replayer,
        )
        stack.callback(engine.close)

        drainer = OutboxDrainer(
            outbox,
            score_log,
            batch=settings.outbox_batch,
            pause_s=settings.outbox_pause_ms / 1000,
            stats=metrics,
        )
        drainer.start()
        stack.push_async_callback(drainer.stop)

        scorer: Scorer
        if settings.batching:
            batcher = MicroBatcher(
                engine,
                max_batch=settings.batch_max_size,
                window_s=settings.batch_window_ms / 1000,
                in_flight=settings.batch_in_flight,
            )
            batcher.start()
            stack.push_async_callback(batcher.stop)
            scorer = batcher
        else:
            scorer = DirectScorer(engine)

        risk = RiskService(
            scorer=scorer,
            store=store,
            log=score_log,
            views=views,
            manifest=model.manifest,
            thresholds=engine.thresholds,
            audit=score_log,
            replayer=replayer,
            explainer=Explainer(model, score_log, replayer),
            stats=metrics,
            readiness=ReadinessProbe(
                pings={"redis": store.ping, "database": score_log.ping},
                outbox=outbox,
                drainer=drainer,
                model_key=model.manifest.key,
                stall_s=settings.outbox_stall_s,
            ),
        )
        leases = TokenLeases(
            RedisRateLimiter(client, prefix=settings.key_prefix, observe=metrics.observe_redis),
            lease_s=settings.rate_limit_lease_s,
        )
        guard = Guard(
            Authenticator(SqlKeyStore(sql), cache_s=settings.auth_cache_s)
            if settings.auth
            else None,
            leases,
            rate=settings.rate_limit_events_s,
            burst=settings.rate_limit_burst,
            streams=StreamSlots(
                per_key=settings.sse_max_per_key,
                per_process=settings.sse_max_per_process,
                retry_after=settings.retry_after_seconds,
            ),
        )
        if guard.authenticator is not None:
            # keys' last-used times in one batched UPDATE every few seconds, never per request,
            # and the last few seconds' at shutdown
            flush = guard.authenticator.flush_usage
            _background(
                stack, "key-usage", USAGE_FLUSH_S, flush, flush, "could not record API key usage"
            )
        if guard.authenticator is not None and leases.lease_s > 0:
            # expired leases' unspent tokens back to the shared buckets; at shutdown every lease,
            # for other workers to spend once this one is gone (docs/auth.md)
            _background(
                stack,
                "rate-leases",
                max(leases.lease_s, 0.1),
                leases.sweep,
                leases.close,
                "could not give back leased rate-limit tokens",
            )
        log.info(
            "riskstream ready: model %s, redis %s, auth %s",
            model.manifest.key,
            redact(redis_url),
            "on" if settings.auth else "OFF",
        )
        yield Services(
            settings,
            model,
            engine,
            scorer,
            store,
            outbox,
            score_log,
            drainer,
            metrics,
            views,
            risk,
            guard,
        )


USAGE_FLUSH_S = 5.0


async def _every(period_s: float, action: Callable[[], Awaitable[object]], failed: str) -> None:
    """``action`` every ``period_s``; a failure is logged (``failed``, with the error's type)
    and the next turn tries again."""
    while True:
        await asyncio.sleep(period_s)
        try:
            await action()
        except Exception as exc:
            log.warning("%s: %s", failed, type(exc).__name__)


def _background(
    stack: AsyncExitStack,
    name: str,
    period_s: float,
    action: Callable[[], Awaitable[object]],
    last: Callable[[], Awaitable[object]],
    failed: str,
) -> None:
    """A periodic task for the lifespan: at shutdown it is cancelled, then ``last`` runs once."""
    task = asyncio.create_task(_every(period_s, action, failed), name=name)

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):
            await last()

    stack.push_async_callback(stop)


# FastAPI's own OpenTelemetry hooks (newer releases) look up a tracer provider in the environment
# on every request (~1% of a busy worker's samples under py-spy; the gain is below this machine's
# noise); riskstream exports Prometheus metrics instead.
_NO_NATIVE_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


class RiskstreamApp(FastAPI):
    """FastAPI with the request id around everything, Starlette's error middleware included
    (``add_middleware`` puts a middleware inside it), so a 500 carries the id too."""

    def build_middleware_stack(self) -> ASGIApp:
        return RequestId(super().build_middleware_stack())


def create_app(settings: Settings | None = None, *, fast_path: bool = True) -> FastAPI:
    """The app on ``settings`` (else read from the environment). ``fast_path=False`` leaves out
    ``SingleEventFastPath``, so that every single-event POST goes through its FastAPI route:
    what the fast path must answer exactly like."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Services]]:
        async with open_services(settings) as services:
            app.state.services = services
            # What startup allocated (model, libraries, routes) lives as long as the process:
            # kept out of the cyclic collector's full scans, which otherwise stalled a busy
            # worker often enough to double its p99 (docs/performance.md).
            gc.collect()
            gc.freeze()
            try:
                yield {"services": services}
            finally:
                gc.unfreeze()

    app = RiskstreamApp(
        title="riskstream",
        version=__version__,
        description="Live risk scores: each event advances an entity's recurrent state one step.",
        lifespan=lifespan,
        default_response_class=JSON,
        generate_unique_id_function=openapi.operation_id,
        docs_url=None,  # served from the package by openapi.install, not from a CDN
        redoc_url=None,
        **_NO_NATIVE_TELEMETRY,
    )
    app.state.settings = settings
    app.state.max_bulk_events = settings.max_bulk_events
    app.state.shared_cursor = views.SharedCursor(settings.stream_poll_s)
    errors.install(app, retry_after=settings.retry_after_seconds)
    openapi.install(app, settings)
    if fast_path:
        app.add_middleware(
            SingleEventFastPath,
            route=events.single_event_route(),
            retry_after=settings.retry_after_seconds,
        )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(metrics.RequestTimer)
    if settings.cors_origins:
        # Only when CORS_ORIGINS names origins: otherwise no Access-Control-* header at all,
        # so no other site's page can read an answer (nor send the key from a browser).
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "If-None-Match"],
            expose_headers=["ETag", "Retry-After", "WWW-Authenticate"],
            max_age=600,
        )
    app.include_router(events.router)
    app.include_router(entities.router)
    app.include_router(admin.router)
    app.include_router(system.router)
    app.include_router(metrics.router)
    app.include_router(views.router)
    app.mount("/ui", StaticFiles(directory=STATIC_DIR, html=True, check_dir=False), name="ui")

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/ui/")

    return app
