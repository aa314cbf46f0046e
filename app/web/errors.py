"""The one place where errors become HTTP responses, all in one JSON shape:

``{"error": {"status", "code", "message", "field", "errors"}}``
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import RiskstreamError, Unavailable
from app.web.responses import JSON

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
_LOCATIONS = {"body", "path", "query", "header", "cookie"}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSON:
    body: dict[str, Any] = {"status": status, "code": code, "message": message, "field": field}
    if errors:
        body["errors"] = errors
    return JSON({"error": body}, status_code=status, headers=headers)


def field_of(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p in _LOCATIONS)]
    parts = [p for p in parts if not p.isdigit()] if loc and loc[0] == "body" else parts
    return ".".join(parts) or ("body" if loc and loc[0] == "body" else None)


def domain_error(exc: RiskstreamError, retry_after: int) -> JSON:
    headers = {"Retry-After": str(retry_after)} if isinstance(exc, Unavailable) else None
    return error_response(exc.status, exc.code, exc.message, field=exc.field, headers=headers)


def install(app: FastAPI, *, retry_after: int) -> None:
    @app.exception_handler(RiskstreamError)
    async def _domain(_: Request, exc: RiskstreamError) -> JSON:
        return domain_error(exc, retry_after)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSON:
        errors = []
        for e in exc.errors():
            message = str(e.get("msg", "invalid"))
            if message.startswith("Value error, "):
                message = message[len("Value error, ") :]
            errors.append({"field": field_of(e.get("loc", ())), "message": message})
        first = errors[0] if errors else {"field": None, "message": "invalid request"}
        return error_response(
            422, "invalid_input", str(first["message"]), field=first["field"], errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSON:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(
            exc.status_code,
            code,
            str(exc.detail),
            field="body" if exc.status_code == 413 else None,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSON:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "internal error; see the server log")
