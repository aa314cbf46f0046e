"""What dashboards poll: the watchlist, the feed of new scores, and a live stream of them."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from riskstream.core.errors import RiskstreamError
from riskstream.core.service import RiskService
from riskstream.settings import Settings
from riskstream.web import openapi
from riskstream.web.auth import READ, ReadKey, guard_of_request
from riskstream.web.deps import RiskDep
from riskstream.web.responses import ModelJSON
from riskstream.web.schemas import FeedEntryOut, FeedOut, WatchlistOut

router = APIRouter(prefix="/v1", tags=["dashboards"])
_CACHE = {"Cache-Control": "no-cache"}  # always revalidate; a 304 costs one Redis GET


class SharedCursor:
    """One watcher of the feed's last cursor for all the streams of this process.

    While any stream waits, one task reads the last cursor every ``poll_s`` and wakes the
    waiting streams when it moves (or when the read fails, so they meet the error). An idle
    stream then costs no Redis call and no wake-up of its own until its heartbeat: 300 idle
    streams each polling the feed took ~80% of a core. ``generation`` counts the moves, so a
    stream that read the feed before a move never sleeps through it.
    """

    def __init__(self, poll_s: float) -> None:
        self._poll_s = poll_s
        self._value: str | None = None
        self._known = False
        self.generation = 0
        self._moved = asyncio.Event()
        self._waiters = 0
        self._task: asyncio.Task[None] | None = None

    async def wait(self, risk: RiskService, since: int, timeout: float) -> bool:
        """Until ``generation`` passes ``since`` (True) or ``timeout`` seconds (False)."""
        if self.generation != since:
            return True
        self._waiters += 1
        try:
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._watch(risk), name="stream-cursor")
            moved = self._moved
            try:
                await asyncio.wait_for(moved.wait(), timeout)
            except TimeoutError:
                return self.generation != since
            return True
        finally:
            self._waiters -= 1

    def _move(self) -> None:
        self.generation += 1
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def _watch(self, risk: RiskService) -> None:
        while self._waiters > 0:
            try:
                value = await risk.last_cursor()
            except RiskstreamError:
                self._known = False
                self._move()  # the streams read the feed themselves, and report the error
            else:
                if not self._known or value != self._value:
                    self._value, self._known = value, True
                    self._move()
            await asyncio.sleep(self._poll_s)


def _etag(*parts: object) -> str:
    digest = hashlib.blake2s(repr(parts).encode(), digest_size=8).hexdigest()
    return f'W/"{digest}"'


def _not_modified(etag: str, if_none_match: str | None) -> Response | None:
    if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers={"ETag": etag, **_CACHE})
    return None


@router.get(
    "/watchlist",
    summary="The entities with the highest current risk for an output",
    response_model=WatchlistOut,
    responses=openapi.errors(422, 503, not_modified=True, example=openapi.WATCHLIST_OUT),
    dependencies=[READ],
)
async def watchlist(
    risk: RiskDep,
    output: Annotated[str | None, Query(description="Defaults to the model's first output")] = None,
    min_risk: Annotated[float, Query(ge=0.0, le=1.0)] = 0.0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    output = risk.output(output)
    etag = _etag(await risk.views_version(), output, min_risk, limit)
    if (cached := _not_modified(etag, if_none_match)) is not None:
        return cached
    rows = await risk.watchlist(output, min_risk=min_risk, limit=limit)
    body = WatchlistOut.of(output, risk.thresholds, rows, risk.manifest.output_names)
    return ModelJSON(body, headers={"ETag": etag, **_CACHE})


@router.get(
    "/scores",
    summary="Every new score in commit order; pass next_cursor back to get only newer ones",
    response_model=FeedOut,
    responses=openapi.errors(410, 422, 503, not_modified=True, example=openapi.FEED_OUT),
    dependencies=[READ],
)
async def feed(
    risk: RiskDep,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous poll")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    last = await risk.last_cursor()
    etag = _etag(last, cursor, limit)
    if (cached := _not_modified(etag, if_none_match)) is not None:
        return cached
    page = await risk.feed(cursor, limit)
    return ModelJSON(FeedOut.of(page, cursor), headers={"ETag": etag, **_CACHE})


@router.get(
    "/stream",
    summary="Server-Sent Events: each new score as it is committed",
    description=(
        "Each event is `event: score`, `id: <cursor>`, `data: <score JSON>`. Reconnect with the "
        "`Last-Event-ID` header (browsers do it by themselves) to resume without gaps. Comments "
        "are sent as heartbeats while nothing happens."
    ),
    response_class=StreamingResponse,
    responses=openapi.stream_responses(),
)
async def stream(
    request: Request,
    risk: RiskDep,
    entity_id: Annotated[str | None, Query(description="Only this entity")] = None,
    output: Annotated[
        str | None, Query(description="With min_risk: the output it applies to")
    ] = None,
    min_risk: Annotated[float, Query(ge=0.0, le=1.0)] = 0.0,
    cursor: Annotated[str | None, Query(description="Start after this cursor")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
    principal: ReadKey = None,
) -> StreamingResponse:
    output = risk.output(output)
    start = next((c for c in (last_event_id, cursor) if c is not None), None)
    start = start if start is not None else await risk.last_cursor()
    if start is not None:
        await risk.feed(start, 1)  # refuses a bad or expired cursor before streaming
    settings: Settings = request.app.state.settings
    slots = guard_of_request(request).streams
    key = principal.name if principal is not None else None
    slots.take(key)  # 429 past the key's cap, 503 past the process's
    held = [True]

    def give_back() -> None:  # once, from whichever ends first: the stream or the response
        if held:
            held.clear()
            slots.give_back(key)

    async def events() -> AsyncIterator[bytes]:
        try:
            async for chunk in _events():
                yield chunk
        finally:
            give_back()

    shared: SharedCursor = request.app.state.shared_cursor

    async def _events() -> AsyncIterator[bytes]:
        position = start
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        yield f"retry: {int(settings.stream_poll_s * 4000)}\n\n".encode()
        while not await request.is_disconnected():
            generation = shared.generation  # before the read: a move after it wakes us
            try:
                page = await risk.feed(position, 500)
            except RiskstreamError as exc:
                error = orjson.dumps({"error": exc.message}).decode()
                yield f"event: error\ndata: {error}\n\n".encode()
                return
            position = page.cursor or position
            for entry in page.entries:
                if entity_id is not None and entry.score.entity_id != entity_id:
                    continue
                if entry.score.risk.get(output, 0.0) < min_risk:
                    continue
                data = FeedEntryOut.of_entry(entry).model_dump_json()
                yield f"event: score\nid: {entry.cursor}\ndata: {data}\n\n".encode()
            if page.cursor is not None:
                quiet_since = loop.time()
                continue
            remaining = settings.stream_heartbeat_s - (loop.time() - quiet_since)
            if remaining <= 0 or not await shared.wait(risk, generation, remaining):
                quiet_since = loop.time()
                yield b": heartbeat\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers=headers,
        background=BackgroundTask(give_back),
    )
