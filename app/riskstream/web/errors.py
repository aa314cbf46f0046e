"""The one place where errors become HTTP responses, all in one JSON shape:

``{"error": {"status", "code", "message", "field", "errors"}}``
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from riskstream.core.errors import RateLimited, RiskstreamError, Unauthenticated, Unavailable
from riskstream.web.responses import ModelJSON
from riskstream.web.schemas import ErrorBody, ErrorOut, FieldError

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
# FastAPI answers 400 when it cannot parse a JSON body at all: invalid UTF-8, or nesting too deep
# for its parser. That is invalid input like any other broken body.
_MALFORMED_BODY = "body is not valid JSON (invalid UTF-8, or nested too deeply)"
_LOCATIONS = {"body", "path", "query", "header", "cookie"}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> ModelJSON:
    body = ErrorBody.model_construct(
        status=status,
        code=code,
        message=message,
        field=field,
        errors=[FieldError.model_construct(**e) for e in errors] if errors else None,
    )
    return ModelJSON(ErrorOut.model_construct(error=body), status_code=status, headers=headers)


def field_of(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p in _LOCATIONS)]
    parts = [p for p in parts if not p.isdigit()] if loc and loc[0] == "body" else parts
    return ".".join(parts) or ("body" if loc and loc[0] == "body" else None)


def domain_error(exc: RiskstreamError, retry_after: int) -> ModelJSON:
    """401 says how to authenticate (``WWW-Authenticate: Bearer``); 429 and 503 say when to
    come back (``Retry-After``, seconds: the bucket's own wait for 429)."""
    headers: dict[str, str] | None = None
    if isinstance(exc, Unauthenticated):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    elif isinstance(exc, Unavailable):
        headers = {"Retry-After": str(retry_after)}
    return error_response(exc.status, exc.code, exc.message, field=exc.field, headers=headers)


def install(app: FastAPI, *, retry_after: int) -> None:
    @app.exception_handler(RiskstreamError)
    async def _domain(_: Request, exc: RiskstreamError) -> ModelJSON:
        return domain_error(exc, retry_after)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> ModelJSON:
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
    async def _http(_: Request, exc: StarletteHTTPException) -> ModelJSON:
        if exc.status_code == 400:
            return error_response(422, "invalid_input", _MALFORMED_BODY, field="body")
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(
            exc.status_code,
            code,
            str(exc.detail),
            field="body" if exc.status_code == 413 else None,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> ModelJSON:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "internal error; see the server log")
