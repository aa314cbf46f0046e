"""Moves committed scores from the outbox into the score log, at least once, idempotently."""

from __future__ import annotations

import asyncio
import logging

from app.core.errors import Unavailable
from app.core.ports import Outbox, ScoreLog

log = logging.getLogger(__name__)


async def drain_once(outbox: Outbox, scores: ScoreLog, *, limit: int, block_ms: int = 0) -> int:
    entries = await outbox.claim(limit, block_ms=block_ms)
    if entries:
        await scores.append([logged for _, logged in entries])
        await outbox.ack([entry_id for entry_id, _ in entries])
    return len(entries)


class OutboxDrainer:
    """Background task: drain in batches; back off while Redis or the database is down.

    After a batch that was not full it pauses ``pause_s``, so light load still reaches SQL in
    batches: one transaction per event would cost more than the rest of scoring it.
    """

    def __init__(
        self,
        outbox: Outbox,
        scores: ScoreLog,
        *,
        batch: int,
        block_ms: int = 100,
        pause_s: float = 0.0,
    ):
        self._pause_s = pause_s
        self._outbox = outbox
        self._scores = scores
        self._batch = batch
        self._block_ms = block_ms
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.drained = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-drainer")

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                drained = await drain_once(
                    self._outbox, self._scores, limit=self._batch, block_ms=self._block_ms
                )
                self.drained += drained
                backoff = 0.1
                if drained < self._batch and self._pause_s > 0 and not self._stopping:
                    await asyncio.sleep(self._pause_s)
            except Unavailable as exc:
                log.warning("outbox drain paused: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                log.exception("outbox drain failed; retrying")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def stop(self, *, flush: bool = True) -> None:
        # No cancellation: cancelling a blocking XREADGROUP can leave redis-py waiting forever.
        # The loop blocks at most ``block_ms`` at a time, so it sees the flag soon.
        self._stopping = True
        if self._task is not None:
            await self._task
            self._task = None
        if flush:  # what this process committed should reach SQL before it exits
            try:
                while await drain_once(self._outbox, self._scores, limit=self._batch):
                    pass
            except Unavailable as exc:
                log.warning("outbox not flushed at shutdown (left for the next drainer): %s", exc)
