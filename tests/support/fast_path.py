"""The single-event fast path and the FastAPI route side by side, for tests that compare them.

``two_paths``: the service built without the fast path (``create_app(fast_path=False)``: every
request goes through the route), and the fast path, built with its public constructor as the
app's own stack builds it, in front of that app; every request the fast path hands on instead
of serving is recorded, so a test can tell which path answered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from riskstream.bootstrap import create_app
from riskstream.settings import Settings
from riskstream.web.events import single_event_route
from riskstream.web.fast_path import SingleEventFastPath
from starlette.types import Receive, Scope, Send


def client(asgi: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://rs")


@dataclass
class TwoPaths:
    routed: FastAPI  # the app without the fast path
    settings: Settings
    handed_on: list[str] = field(default_factory=list)  # paths the fast path did not serve

    @property
    def fast(self) -> Any:
        """The fast path in front of ``routed``."""
        app, handed_on = self.routed, self.handed_on

        async def counting(scope: Scope, receive: Receive, send: Send) -> None:
            handed_on.append(scope["path"])
            await app(scope, receive, send)

        fast_path = SingleEventFastPath(
            counting, route=single_event_route(), retry_after=self.settings.retry_after_seconds
        )

        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            scope["app"] = app  # where the fast path finds the services, as inside the stack
            await fast_path(scope, receive, send)

        return asgi


@pytest.fixture
async def two_paths(settings: Settings) -> AsyncIterator[TwoPaths]:
    app = create_app(settings, fast_path=False)
    async with app.router.lifespan_context(app):
        yield TwoPaths(app, settings)
