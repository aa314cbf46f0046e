"""What readiness reports beyond "reachable": conditions leaving the load balancer cannot fix.

The process still serves (200), but an operator should look: dead letters waiting, an outbox
drain that has stopped making progress, a Redis found emptied.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from riskstream.core.drain import OutboxDrainer, describe
from riskstream.core.errors import Unavailable
from riskstream.core.ports import Outbox


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def warnings(
    outbox: Outbox, drainer: OutboxDrainer, *, stall_s: float
) -> list[dict[str, str]]:
    """``[{"field", "message"}]``, empty when all is well. Raises ``Unavailable`` if Redis is."""
    found: list[dict[str, str]] = []
    try:
        await drainer.check_redis()
    except Unavailable:
        raise
    except Exception as exc:
        found.append(
            {"field": "redis", "message": f"cannot tell if Redis was emptied: {describe(exc)}"}
        )
    if drainer.redis_emptied_at is not None:
        found.append(
            {
                "field": "redis",
                "message": f"Redis was found emptied at {_iso(drainer.redis_emptied_at)}: the "
                "scores it held that were not yet in SQL and every entity's state were lost "
                "(run an external Redis with appendonly yes)",
            }
        )
    waiting = await outbox.dead_letters_waiting()
    if waiting:
        found.append(
            {
                "field": "deadletter",
                "message": f"{waiting} dead letter(s) waiting: scores the database refused; "
                "see `riskstream dead-letters list`, then `riskstream dead-letters replay`",
            }
        )
    backlog = await outbox.backlog()
    stalled = drainer.stalled_s()
    if backlog > 0 and stalled > stall_s:
        found.append(
            {
                "field": "outbox",
                "message": f"outbox drain stalled: {backlog} score(s) waiting and no progress "
                f"for {stalled:.0f} s",
            }
        )
    return found


@dataclass(frozen=True, slots=True)
class Readiness:
    """``checks``: dependency -> "ok" or why not; ``unreachable``: the dependencies this process
    cannot use (then it is not ready: 503); ``warnings``: what an operator must act on."""

    checks: dict[str, str]
    unreachable: list[str] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.unreachable:
            return "not_ready"
        return "degraded" if self.warnings else "ready"


class ReadinessProbe:
    """Reachability of Redis and the database, then the warnings above."""

    def __init__(
        self,
        *,
        pings: dict[str, Callable[[], Awaitable[None]]],
        outbox: Outbox,
        drainer: OutboxDrainer,
        model_key: str,
        stall_s: float,
    ) -> None:
        self._pings = pings
        self._outbox = outbox
        self._drainer = drainer
        self._model_key = model_key
        self._stall_s = stall_s

    async def __call__(self) -> Readiness:
        checks = {"model": self._model_key}
        unreachable: list[str] = []
        for name, ping in self._pings.items():
            try:
                await ping()
                checks[name] = "ok"
            except Unavailable as exc:
                checks[name] = exc.message
                unreachable.append(name)
        if unreachable:
            return Readiness(checks, unreachable)
        try:
            found = await warnings(self._outbox, self._drainer, stall_s=self._stall_s)
        except Unavailable:  # Redis went away since the ping: the next probe says so
            found = []
        return Readiness(checks, [], found)
