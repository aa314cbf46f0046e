"""Moves committed scores from the outbox into the score log, at least once, idempotently.

No record may stop the log: when the score log refuses a batch for any reason but being
unreachable, the batch is split until the entries it refuses are found; the others are
inserted and those few are moved to the dead letters (with the error) for an operator to look
at and replay. An entry that cannot even be decoded goes there too. While the database is
unreachable nothing is set aside: the drain backs off and tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from riskstream.core.domain import LoggedScore
from riskstream.core.errors import Unavailable
from riskstream.core.ports import DeadLetter, Outbox, ScoreLog, Undecodable

log = logging.getLogger(__name__)

# Longest error text kept with a dead letter.
_ERROR_CHARS = 500


class DrainStats(Protocol):
    def sql_commit_lags(self, seconds: Sequence[float]) -> None:
        """Per score just committed to the score log: seconds since it was scored (the event
        accepted and its state committed), as the wall clock tells."""
        ...

    def dead_lettered(self, count: int) -> None: ...

    def dead_letters_waiting(self, count: int) -> None: ...

    def redis_emptied(self) -> None: ...


class _NoStats:
    def sql_commit_lags(self, seconds: Sequence[float]) -> None:
        pass

    def dead_lettered(self, count: int) -> None:
        pass

    def dead_letters_waiting(self, count: int) -> None:
        pass

    def redis_emptied(self) -> None:
        pass


NO_STATS: DrainStats = _NoStats()


def describe(error: BaseException) -> str:
    """The error's type and first line: database drivers put the statement and its parameters
    (the event's values) on the lines after it, and those never go to a log."""
    first = str(error).strip().split("\n", 1)[0]
    return f"{type(error).__name__}: {first}"[:_ERROR_CHARS]


async def _insert(
    scores: ScoreLog, batch: Sequence[tuple[str, LoggedScore]]
) -> list[tuple[str, str]]:
    """Insert ``batch``; return the ids of the entries the log refused, each with its error.
    Halves a refused batch until the refused entries stand alone: k bad entries among n cost
    about k * log2(n) extra inserts, and a batch with none costs one."""
    try:
        await scores.append([logged for _, logged in batch])
        return []
    except Unavailable:
        raise
    except Exception as exc:
        if len(batch) == 1:
            return [(batch[0][0], describe(exc))]
    middle = len(batch) // 2
    return await _insert(scores, batch[:middle]) + await _insert(scores, batch[middle:])


async def drain_once(
    outbox: Outbox,
    scores: ScoreLog,
    *,
    limit: int,
    block_ms: int = 0,
    stats: DrainStats = NO_STATS,
    wall_clock: Callable[[], float] = time.time,
) -> int:
    """Claim up to ``limit`` entries and settle each: in the log, or in the dead letters.
    Returns how many were settled."""
    entries = await outbox.claim(limit, block_ms=block_ms)
    if not entries:
        return 0
    readable = [(i, entry) for i, entry in entries if isinstance(entry, LoggedScore)]
    refused = dict(await _insert(scores, readable))
    letters: list[DeadLetter] = []  # in the outbox's order
    for entry_id, entry in entries:
        if isinstance(entry, Undecodable):
            letters.append(DeadLetter(entry_id, f"undecodable outbox entry: {entry.error}"))
        elif entry_id in refused:
            score = entry.score
            letters.append(DeadLetter(entry_id, refused[entry_id], score.entity_id, score.event_id))
    logged = [(entry_id, entry) for entry_id, entry in readable if entry_id not in refused]
    if logged:
        now = wall_clock()  # the inserts' transactions have committed
        stats.sql_commit_lags([max(0.0, now - entry.score.scored_at) for _, entry in logged])
    await outbox.ack([entry_id for entry_id, _ in logged])
    if letters:
        await outbox.dead_letter(letters)
        stats.dead_lettered(len(letters))
        for letter in letters:
            log.error(
                "outbox entry %s (entity %s, event %s) moved to the dead letters: %s",
                letter.entry_id,
                letter.entity_id,
                letter.event_id,
                letter.error,
            )
    return len(entries)


class OutboxDrainer:
    """Background task: drain in batches; back off while Redis or the database is down.

    After a batch that was not full it pauses ``pause_s``, so light load still reaches SQL in
    batches: one transaction per event would cost more than the rest of scoring it.

    At most every ``check_every_s`` it also asks the outbox whether Redis was emptied (then the
    scores it held are lost: said once in the log, in a metric and in readiness) and how many
    dead letters wait. ``last_progress`` is when a round last settled entries or found the
    outbox empty, for readiness to tell a stalled drain.
    """

    def __init__(
        self,
        outbox: Outbox,
        scores: ScoreLog,
        *,
        batch: int,
        block_ms: int = 100,
        pause_s: float = 0.0,
        stats: DrainStats = NO_STATS,
        check_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self._pause_s = pause_s
        self._outbox = outbox
        self._scores = scores
        self._batch = batch
        self._block_ms = block_ms
        self._stats = stats
        self._check_every_s = check_every_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._checked: float | None = None
        self._checking = asyncio.Lock()  # readiness checks too: one emptying is found once
        self.drained = 0
        self.last_progress = clock()
        self.redis_emptied_at: float | None = None  # wall clock, the last time it was found

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-drainer")

    def stalled_s(self) -> float:
        """Seconds since the drain last settled entries or found the outbox empty."""
        return max(0.0, self._clock() - self.last_progress)

    async def check_redis(self) -> None:
        """Is the outbox's Redis the one this process started with? Also updates the gauge of
        dead letters waiting."""
        async with self._checking:
            self._checked = self._clock()
            if not await self._outbox.intact():
                self.redis_emptied_at = self._wall_clock()
                self._stats.redis_emptied()
                log.error(
                    "Redis was emptied (its instance marker was gone): the scores committed but "
                    "not yet in SQL and every entity's state it held are lost; the outbox starts "
                    "afresh"
                )
            self._stats.dead_letters_waiting(await self._outbox.dead_letters_waiting())

    async def _round(self) -> int:
        if self._checked is None or self._clock() - self._checked >= self._check_every_s:
            try:
                await self.check_redis()
            except Unavailable:
                raise
            except Exception:  # a check that cannot be made must not stop the drain
                log.exception("checking whether Redis was emptied failed; draining on")
        drained = await drain_once(
            self._outbox,
            self._scores,
            limit=self._batch,
            block_ms=self._block_ms,
            stats=self._stats,
            wall_clock=self._wall_clock,
        )
        # Nothing claimed is progress only if nothing waits: entries a failed round left pending
        # are not claimed again until they have been idle for a while.
        if drained or await self._outbox.backlog() == 0:
            self.last_progress = self._clock()
        return drained

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                drained = await self._round()
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
                while await drain_once(
                    self._outbox,
                    self._scores,
                    limit=self._batch,
                    stats=self._stats,
                    wall_clock=self._wall_clock,
                ):
                    pass
            except Unavailable as exc:
                log.warning("outbox not flushed at shutdown (left for the next drainer): %s", exc)
