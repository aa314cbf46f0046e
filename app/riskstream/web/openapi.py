"""The OpenAPI description as the truth, and the docs UI served from the package itself.

Each operation declares its 200 model, an example, and ErrorOut for every error status it can
answer. What depends on settings or on the model (id length, the model's outputs) is filled in
per app when the description is generated, so it says what this server enforces. Swagger UI and
ReDoc load their assets from the ``fastapi-offline`` package, never from a CDN: on a hospital's
closed network a CDN is unreachable and ``/docs`` would be blank.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from riskstream.adapters.redis_views import CURSOR_PATTERN
from riskstream.core.domain import ID_PATTERN
from riskstream.core.engine import FLOAT32_MAX
from riskstream.core.errors import ModelContractError
from riskstream.core.manifest import Manifest, load_manifest
from riskstream.settings import Settings
from riskstream.web.schemas import BulkEventIn, ErrorOut

DOCS_ASSETS = "/docs-assets"

_DESCRIPTIONS = {
    304: "Not Modified: nothing changed since the ETag given in If-None-Match",
    404: "Unknown entity (`unknown_entity`); or an id no route can address (`not_found`)",
    409: "Event earlier than the entity's last (`out_of_order`); or the entity's stored record "
    "cannot be read (`unreadable_record`); a score of another model version than this server's "
    "(`model_mismatch`)",
    410: "The cursor is older than what the feed keeps (`cursor_expired`)",
    413: "Body over MAX_BODY_BYTES, or more events than MAX_BULK_EVENTS (`payload_too_large`)",
    415: "The body is not declared as JSON (`unsupported_media_type`)",
    422: "Invalid input (`invalid_input`); `field` names what was wrong",
    503: "Redis or the database unreachable (`unavailable`, `contention`), with Retry-After",
}
# Added to every operation that takes an API key (those with ``security``, see
# ``riskstream.web.auth``).
_AUTH_DESCRIPTIONS = {
    401: "No API key, or an unknown or revoked one (`unauthenticated`), with "
    "`WWW-Authenticate: Bearer`",
    403: "The API key lacks the scope this operation needs (`forbidden`; the message names it)",
    429: "Over the API key's rate limit, or its open streams (`rate_limited`), with Retry-After",
}
_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer`"}},
    429: {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}},
}

_SCORE = {
    "entity_id": "p000001",
    "event_id": "e1",
    "step": 1,
    "time": "2026-11-25T08:00:00Z",
    "scored_at": "2026-11-25T08:00:00.123456Z",
    "model": {"name": "aki-lstm", "version": "1.2.0"},
    "risk": {"aki_48h": 0.06, "sepsis": 0.01},
}
EVENT_OUT = {**_SCORE, "duplicate": False, "rehydrated": False}
LATEST_OUT = {**_SCORE, "last_event_time": "2026-11-25T08:00:00Z"}
PAGE_OUT = {"entity_id": "p000001", "scores": [{**_SCORE, "values": None}], "next_after_step": None}
BULK_OUT = {
    "accepted": 1,
    "rejected": 1,
    "results": [
        {"index": 0, "status": 200, **EVENT_OUT},
        {
            "index": 1,
            "status": 422,
            "error": {
                "status": 422,
                "code": "invalid_input",
                "field": "values.Heart",
                "message": "unknown feature 'Heart'; the model takes 40 features, listed at "
                "GET /v1/model",
            },
        },
    ],
}
EXPLANATION_OUT = {
    **_SCORE,
    "step": 2,
    "event_id": "e2",
    "reproduced": True,
    "outputs": {
        "aki_48h": {
            "risk": 0.18,
            "previous": 0.06,
            "inputs": [
                {"feature": "Creatinine", "value": 4.0, "effect": 0.12},
                {"feature": "HR", "value": 97.0, "effect": 0.001},
            ],
        }
    },
}
_ALERT = {"since": "2026-11-25T08:00:00Z"}
WATCHLIST_OUT = {
    "output": "aki_48h",
    "thresholds": {"aki_48h": {"raise": 0.33, "clear": 0.25}},
    "entities": [{**LATEST_OUT, "change": {"aki_48h": 0.02}, "alerts": {"aki_48h": _ALERT}}],
}
FEED_OUT = {
    "scores": [{**_SCORE, "cursor": "1795510800123-0", "alerts": {"aki_48h": _ALERT}}],
    "next_cursor": "1795510800123-0",
}
MODEL_OUT = {
    "name": "aki-lstm",
    "version": "1.2.0",
    "features": [{"name": "HR", "unit": "beats/min", "description": "Heart rate"}],
    "outputs": [{"name": "aki_48h", "horizon_hours": 48}],
    "states": [{"name": "h", "shape": [2, 64]}],
}
READY_OUT = {
    "status": "ready",
    "checks": {"model": "aki-lstm/1.2.0", "redis": "ok", "database": "ok"},
}
_SSE_EXAMPLE = (
    "retry: 1000\n\nevent: score\nid: 1795510800123-0\n"
    'data: {"entity_id":"p000001","event_id":"e1","step":1,…,"cursor":"1795510800123-0",'
    '"alerts":{}}\n\n: heartbeat\n\n'
)


def errors(
    *statuses: int, example: Any = None, not_modified: bool = False
) -> dict[int | str, dict[str, Any]]:
    """An operation's ``responses``: the 200 example, 304 if it answers ETags, and ErrorOut
    for each error status. (An operation with parameters lists 422 even when they cannot fail:
    FastAPI would otherwise describe a 422 of its own shape.)"""
    out: dict[int | str, dict[str, Any]] = {}
    if example is not None:
        out[200] = {"content": {"application/json": {"example": example}}}
    if not_modified:
        out[304] = {
            "description": _DESCRIPTIONS[304],
            "headers": {"ETag": {"schema": {"type": "string"}}},
        }
    for status in sorted(statuses):
        out[status] = {"model": ErrorOut, "description": _DESCRIPTIONS[status]}
    return out


def stream_responses() -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": "A Server-Sent Events stream of `event: score` messages",
            "content": {
                "text/event-stream": {"schema": {"type": "string"}, "example": _SSE_EXAMPLE}
            },
        },
        **errors(410, 422, 503),
    }


def bulk_request_body() -> dict[str, Any]:
    item = {"$ref": "#/components/schemas/BulkEventIn"}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "array", "items": item},
                    "example": [
                        {
                            "entity_id": "p2",
                            "event_id": "a",
                            "time": "2026-11-25T08:00:00Z",
                            "values": {"HR": 80},
                        },
                        {
                            "entity_id": "p3",
                            "event_id": "a",
                            "time": 1795510800,
                            "values": {"HR": 120},
                        },
                    ],
                },
                "application/x-ndjson": {
                    "schema": {"type": "string", "description": "one BulkEventIn per line"},
                    "example": '{"entity_id": "p2", "event_id": "a", "time": '
                    '"2026-11-25T08:00:00Z", "values": {"HR": 80}}\n',
                },
            },
        }
    }


def operation_id(route: APIRoute) -> str:
    """The route's function name (post_event, watchlist, …): what generated clients call."""
    return route.name


def _id_schema(max_length: int) -> dict[str, Any]:
    return {"type": "string", "pattern": ID_PATTERN, "minLength": 1, "maxLength": max_length}


def _manifest(settings: Settings) -> Manifest | None:
    try:
        return load_manifest(Path(settings.model_dir))
    except (ModelContractError, OSError):
        return None


def _values_schema(manifest: Manifest) -> dict[str, Any]:
    """The model's features, each a number (finite as float32, inside the feature's declared
    ``range`` if the manifest gives one) or null; no other names."""
    properties: dict[str, Any] = {}
    for feature in manifest.features:
        low, high = feature.range or (-FLOAT32_MAX, FLOAT32_MAX)
        number = {"type": "number", "minimum": low, "maximum": high}
        if feature.unit:
            number["description"] = feature.unit
        properties[feature.name] = {"anyOf": [number, {"type": "null"}]}
    return {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "description": "Feature name (see GET /v1/model) -> value or null",
    }


def describe(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The app's OpenAPI document with what this server's settings and model enforce."""
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["BulkEventIn"] = BulkEventIn.model_json_schema(mode="validation")
    ident = _id_schema(settings.max_id_length)
    schemas["EventIn"]["properties"]["event_id"].update(ident)
    for name in ("event_id", "entity_id"):
        schemas["BulkEventIn"]["properties"][name].update(ident)
    manifest = _manifest(settings)
    outputs = list(manifest.output_names) if manifest is not None else None
    if manifest is not None:
        for model in ("EventIn", "BulkEventIn"):
            schemas[model]["properties"]["values"] = _values_schema(manifest)
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            if operation.get("security"):
                _declare_auth_errors(operation, limited=method == "post" or path == "/v1/stream")
            for param in operation.get("parameters", []):
                if (method, param["name"]) == ("post", "entity_id"):
                    param["schema"] = {**param["schema"], **ident}
                elif param["name"] == "output":
                    param["schema"] = (
                        {"type": "string", "enum": outputs}
                        if outputs
                        else {"type": "string", "minLength": 1}
                    )
                elif param["name"] == "since":
                    param["schema"] = {"type": "string", "format": "date-time"}
                elif param["name"] in ("cursor", "last-event-id"):
                    param["schema"] = {"type": "string", "pattern": CURSOR_PATTERN}
    return doc


def _declare_auth_errors(operation: dict[str, Any], *, limited: bool) -> None:
    """401 and 403 on every guarded operation; 429 where a limit applies (writes, streams)."""
    responses = operation.setdefault("responses", {})
    for status in (401, 403, 429) if limited else (401, 403):
        responses[str(status)] = {
            "description": _AUTH_DESCRIPTIONS[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
            **({"headers": _HEADERS[status]} if status in _HEADERS else {}),
        }
    operation["responses"] = dict(sorted(responses.items(), key=lambda item: str(item[0])))


# The docs pages may load nothing from another host (ReDoc shows a logo from its maker's CDN):
# the browser enforces it, so a closed network sees no failed request and no outside host
# learns where the docs are read.
_OWN_HOST_ONLY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)


def _own_host_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = _OWN_HOST_ONLY
    return page


def install(app: FastAPI, settings: Settings) -> None:
    """The per-app description at /openapi.json, and Swagger UI and ReDoc served offline."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _own_host_only(
            get_swagger_ui_html(
                openapi_url=f"{root}/openapi.json",
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
                swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
                # no badge from the public validator: it would send it this server's URL
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _own_host_only(
            get_redoc_html(
                openapi_url=f"{root}/openapi.json",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
                with_google_fonts=False,
            )
        )
