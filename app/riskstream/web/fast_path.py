"""The hot route without FastAPI's per-request machinery.

``POST /v1/entities/{entity_id}/events`` is what a load test hammers. Through FastAPI's routing,
dependency solving and exception middleware the app's stack cost ~250 µs of CPU per request
before any scoring; with this path in front it costs ~60 µs (``docs/performance.md``). Only a
well-formed request is served here: one declared as application/json whose body validates as
``EventIn``; one with another content type, or none, is refused here with 415 exactly as the route
refuses it. Anything else (another route, a body that does not validate) goes on, body replayed,
to the FastAPI route, which stays the route's definition, its OpenAPI entry and the one place its
input errors are phrased. Domain errors map through ``errors.domain_error`` like everywhere else.

Access control happens here in the route's order: 415 first (the route's ``json_write``
dependency), then the key and its ``ingest`` scope (401/403, the route's ``IngestKey``), then the
body, then the key's rate limit (429) inside ``score_one``, shared with the route.
"""

from __future__ import annotations

from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from riskstream.core.auth import Principal
from riskstream.core.errors import RiskstreamError
from riskstream.core.keys import Scope as KeyScope
from riskstream.core.service import RiskService
from riskstream.web.auth import Guard, authorization
from riskstream.web.deps import JSON_MEDIA, media_type, unsupported
from riskstream.web.errors import domain_error
from riskstream.web.events import score_one
from riskstream.web.schemas import EventIn


class SingleEventFastPath:
    def __init__(self, app: ASGIApp, *, route: APIRoute, retry_after: int) -> None:
        self.app = app
        self.route = route  # its path pattern; and the request timer's label, as if routed
        self.methods = route.methods or set()
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            self.route.path_regex.match(scope["path"])
            if scope["type"] == "http" and scope["method"] in self.methods
            else None
        )
        if match is None:
            await self.app(scope, receive, send)
            return
        if (refused := unsupported(media_type(scope["headers"]), JSON_MEDIA)) is not None:
            # answered here: FastAPI would parse a body without a content type as JSON first
            scope["route"] = self.route
            await domain_error(refused, self.retry_after)(scope, receive, send)
            return
        services = scope["app"].state.services
        guard: Guard = services.guard
        principal: Principal | None = None
        if guard.enabled:
            try:
                principal = await guard.admit(authorization(scope["headers"]), KeyScope.INGEST)
            except RiskstreamError as exc:
                scope["route"] = self.route
                await domain_error(exc, self.retry_after)(scope, receive, send)
                return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        risk: RiskService = services.risk
        try:
            event = EventIn.model_validate_json(body)
        except ValidationError:
            risk.refused(1)  # the route answers 422 with FastAPI's phrasing of what is wrong
            await self.app(scope, _replay(body, receive), send)
            return
        scope["route"] = self.route
        try:
            response = await score_one(risk, guard, principal, match["entity_id"], event)
        except RiskstreamError as exc:
            response = domain_error(exc, self.retry_after)
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
