from __future__ import annotations

import time

from fastapi import APIRouter
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from riskstream.core.errors import Unavailable
from riskstream.web.auth import READ
from riskstream.web.deps import ServicesDep

router = APIRouter(tags=["system"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "The Prometheus text exposition format",
            "content": {
                "text/plain": {
                    "schema": {"type": "string"},
                    "example": "riskstream_outbox_backlog 0.0\n",
                }
            },
        }
    },
    dependencies=[READ],
)
async def metrics(services: ServicesDep) -> Response:
    try:
        services.metrics.backlog.set(await services.outbox.backlog())
    except Unavailable:
        pass  # the scrape still answers; riskstream_ready tells that Redis is away
    # What /readyz would answer, for alerting: a process that still serves /metrics may be
    # unable to score (Redis away), which `up` alone would not show.
    readiness = await services.risk.readiness()
    services.metrics.ready.set(0 if readiness.unreachable else 1)
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")


class RequestTimer:
    """Latency histogram per route template (not per URL, so entity ids don't explode it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            services = getattr(scope["app"].state, "services", None)
            if services is not None:
                route = getattr(scope.get("route"), "path", "unmatched")
                services.metrics.http.labels(scope["method"], route, str(status)).observe(
                    time.perf_counter() - started
                )
