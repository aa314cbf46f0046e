"""The request id: taken from ``X-Request-ID`` when it is a safe token, else made here; echoed
in the response's ``X-Request-ID`` and put on every log line of the request (``riskstream.logs``).

A pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` costs a task and a stream per request),
wrapped around the whole application, the error middleware included: a 500 and the single-event
fast path carry the header too.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from riskstream.core.engine import RandomIds
from riskstream.logs import REQUEST_ID

HEADER = b"x-request-id"
MAX_LENGTH = 128
# What a proxy or a client typically sends (a UUID, a hex or base64 token, a trace id): no
# spaces, quotes or control characters, so it is one token in a text log line.
_SAFE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,%d}" % (MAX_LENGTH - 1))


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._new = RandomIds()

    def request_id(self, scope: Scope) -> bytes:
        for name, value in scope["headers"]:
            if name == HEADER:
                if _SAFE.fullmatch(value) is not None:
                    return bytes(value)
                break
        return self._new().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self.request_id(scope)
        token = REQUEST_ID.set(request_id.decode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (HEADER, request_id)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
        # Only after a normal end: an error goes on to the server, which logs it next in this
        # same task (uvicorn runs each request in a task of its own), with the id still set.
        REQUEST_ID.reset(token)
