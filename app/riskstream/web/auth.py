"""Access control at the door: who is calling (``Authorization: Bearer <key>``), may they (the
route's scope), and is their key under its rate limit.

One ``Guard`` per process, built in ``bootstrap``: it holds the ``Authenticator`` (verdicts
cached in-process, ``riskstream.core.auth``) and the rate limiter (``TokenLeases``: a token
bucket per key in Redis, shared by every worker, its tokens leased to each worker in chunks).
Routes take it as a dependency per scope (``IngestKey``, ``ReadKey``, ``AdminKey``); the
single-event fast path, which bypasses FastAPI's dependencies, calls ``Guard.admit`` itself with
the same arguments, so both answer the same. With ``AUTH`` off nothing is checked and the
principal is None.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Protocol

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from riskstream.core.auth import Authenticator, Principal, Scope
from riskstream.core.errors import RateLimited, Unavailable


class Limiter(Protocol):
    async def check(self, bucket: str, *, cost: int, rate: float, burst: int) -> object: ...


def authorization(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The ``Authorization`` header of an ASGI scope's headers (latin-1, as HTTP has it)."""
    for name, value in headers:
        if name == b"authorization":
            return value.decode("latin-1")
    return None


class Guard:
    def __init__(
        self,
        authenticator: Authenticator | None,
        limiter: Limiter,
        *,
        rate: float,
        burst: int,
        streams: StreamSlots,
    ) -> None:
        self.streams = streams
        self.authenticator = authenticator  # None: AUTH is off
        self._limiter = limiter
        self._rate = rate
        self._burst = burst

    @property
    def enabled(self) -> bool:
        return self.authenticator is not None

    async def admit(self, header: str | None, scope: Scope) -> Principal | None:
        """The caller's principal if its key has ``scope``; 401/403 otherwise. None if off."""
        if self.authenticator is None:
            return None
        return await self.authenticator.require(header, scope)

    async def charge(self, principal: Principal | None, events: int) -> None:
        """Take ``events`` tokens from the key's bucket (from this worker's lease of it when it
        holds enough: no round trip); 429 (``RateLimited``) when empty. A request costing more
        than the burst passes when the bucket is full and leaves a debt (``docs/auth.md``), so a
        full-size bulk request is always possible."""
        if principal is None or events < 1:
            return
        await self._limiter.check(principal.name, cost=events, rate=self._rate, burst=self._burst)


def _guard(request: Request) -> Guard:
    guard: Guard = request.app.state.services.guard
    return guard


# Declares the bearer scheme in the OpenAPI document (components.securitySchemes and each
# guarded operation's ``security``), so generated clients send the key; it checks nothing
# itself (``auto_error=False``): ``Guard.admit`` does, with the one error shape.
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key: `Authorization: Bearer <key>` (`riskstream keys create`)",
)
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


def _requires(
    scope: Scope,
) -> Callable[[Request, HTTPAuthorizationCredentials | None], Awaitable[Principal | None]]:
    async def dependency(request: Request, _: _Credentials) -> Principal | None:
        return await _guard(request).admit(request.headers.get("authorization"), scope)

    dependency.__name__ = f"require_{scope.value}"
    return dependency


async def guard_of(request: Request) -> Guard:
    return _guard(request)


guard_of_request = _guard


require_ingest = _requires(Scope.INGEST)
require_read = _requires(Scope.READ)
require_admin = _requires(Scope.ADMIN)
READ = Depends(require_read)  # for ``dependencies=[READ]`` where the principal is not needed
ReadKey = Annotated[Principal | None, Depends(require_read)]
IngestKey = Annotated[Principal | None, Depends(require_ingest)]
AdminKey = Annotated[Principal | None, Depends(require_admin)]
GuardDep = Annotated[Guard, Depends(guard_of)]


class StreamSlots:
    """Caps on open ``/v1/stream`` connections: per key and in all, both per worker process
    (a stream is held by one process for its life; with N workers a key may hold up to N times
    ``SSE_MAX_PER_KEY``). Past the key's cap: 429; past the process's: 503; both with
    ``Retry-After``. Without AUTH there is no key: only the process's cap applies."""

    def __init__(self, *, per_key: int, per_process: int, retry_after: int) -> None:
        self.per_key = per_key
        self.per_process = per_process
        self._retry_after = retry_after
        self._open: dict[str | None, int] = {}
        self.total = 0

    def take(self, key: str | None) -> None:
        if self.total >= self.per_process:
            raise Unavailable(
                f"this server process has {self.per_process} streams open, its most",
                field="stream",
            )
        held = self._open.get(key, 0)
        if key is not None and held >= self.per_key:
            raise RateLimited(
                f"the API key {key!r} has {self.per_key} streams open, its most",
                retry_after=self._retry_after,
            )
        self._open[key] = held + 1
        self.total += 1

    def give_back(self, key: str | None) -> None:
        held = self._open.get(key, 0) - 1
        if held > 0:
            self._open[key] = held
        else:
            self._open.pop(key, None)
        self.total -= 1
