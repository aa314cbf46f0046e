"""What dashboards poll: the watchlist, the feed of new scores, and a live stream of them."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response, StreamingResponse

from app.core.errors import InvalidInput, RiskstreamError
from app.web import render
from app.web.deps import ServicesDep
from app.web.responses import JSON
from app.web.schemas import ErrorOut

router = APIRouter(prefix="/v1", tags=["dashboards"])

_ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorOut} for c in (410, 422, 503)}
_CACHE = {"Cache-Control": "no-cache"}  # always revalidate; a 304 costs one Redis GET


def _etag(*parts: object) -> str:
    digest = hashlib.blake2s(repr(parts).encode(), digest_size=8).hexdigest()
    return f'W/"{digest}"'


def _not_modified(etag: str, if_none_match: str | None) -> Response | None:
    if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers={"ETag": etag, **_CACHE})
    return None


def _output(services: ServicesDep, output: str | None) -> str:
    outputs = services.model.manifest.output_names
    if output is None:
        return outputs[0]
    if output not in outputs:
        raise InvalidInput(
            f"unknown output {output!r}; the model has {list(outputs)}", field="output"
        )
    return output


@router.get(
    "/watchlist",
    summary="The entities with the highest current risk for an output",
    responses=_ERRORS,
)
async def watchlist(
    services: ServicesDep,
    output: Annotated[str | None, Query(description="Defaults to the model's first output")] = None,
    min_risk: Annotated[float, Query(ge=0.0, le=1.0)] = 0.0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    output = _output(services, output)
    etag = _etag(await services.views.version(), output, min_risk, limit)
    if (cached := _not_modified(etag, if_none_match)) is not None:
        return cached
    outputs = services.model.manifest.output_names
    rows = await services.views.watchlist(output, min_risk=min_risk, limit=limit)
    thresholds = services.engine.thresholds
    body = {
        "output": output,
        "thresholds": {
            o: {"raise": t.raise_at, "clear": t.clear_below} for o, t in thresholds.items()
        },
        "entities": [render.watched(w, outputs) for w in rows],
    }
    return JSON(body, headers={"ETag": etag, **_CACHE})


@router.get(
    "/scores",
    summary="Every new score in commit order; pass next_cursor back to get only newer ones",
    responses=_ERRORS,
)
async def feed(
    services: ServicesDep,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous poll")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    last = await services.views.last_cursor()
    etag = _etag(last, cursor, limit)
    if (cached := _not_modified(etag, if_none_match)) is not None:
        return cached
    entries = await services.views.feed(cursor, limit)
    body = {
        "scores": [render.feed_entry(e) for e in entries],
        "next_cursor": entries[-1].cursor if entries else cursor,
    }
    return JSON(body, headers={"ETag": etag, **_CACHE})


@router.get(
    "/stream",
    summary="Server-Sent Events: each new score as it is committed",
    description=(
        "Each event is `event: score`, `id: <cursor>`, `data: <score JSON>`. Reconnect with the "
        "`Last-Event-ID` header (browsers do it by themselves) to resume without gaps. Comments "
        "are sent as heartbeats while nothing happens."
    ),
    response_class=StreamingResponse,
    responses=_ERRORS,
)
async def stream(
    request: Request,
    services: ServicesDep,
    entity_id: Annotated[str | None, Query(description="Only this entity")] = None,
    output: Annotated[
        str | None, Query(description="With min_risk: the output it applies to")
    ] = None,
    min_risk: Annotated[float, Query(ge=0.0, le=1.0)] = 0.0,
    cursor: Annotated[str | None, Query(description="Start after this cursor")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    output = _output(services, output)
    start = last_event_id or cursor or await services.views.last_cursor()
    if start is not None:
        await services.views.feed(start, 1)  # refuses a bad or expired cursor before streaming
    settings = services.settings

    async def events() -> AsyncIterator[bytes]:
        position = start
        quiet = 0.0
        yield f"retry: {int(settings.stream_poll_s * 4000)}\n\n".encode()
        while not await request.is_disconnected():
            try:
                entries = await services.views.feed(position, 500)
            except RiskstreamError as exc:
                error = orjson.dumps({"error": exc.message}).decode()
                yield f"event: error\ndata: {error}\n\n".encode()
                return
            for entry in entries:
                position = entry.cursor
                if entity_id is not None and entry.score.entity_id != entity_id:
                    continue
                if entry.score.risk.get(output, 0.0) < min_risk:
                    continue
                data = orjson.dumps(render.feed_entry(entry)).decode()
                yield f"event: score\nid: {entry.cursor}\ndata: {data}\n\n".encode()
            if entries:
                quiet = 0.0
                continue
            await asyncio.sleep(settings.stream_poll_s)
            quiet += settings.stream_poll_s
            if quiet >= settings.stream_heartbeat_s:
                quiet = 0.0
                yield b": heartbeat\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
