"""Who is calling, and may they: the ``Authorization: Bearer <secret>`` check of every route.

A request must cost microseconds, not a query and never a 50 ms KDF, so verdicts are cached in
this process under a keyed digest of the secret (keyed BLAKE2b, a MAC by design and ~3x
cheaper than HMAC-SHA256, with a random per-process key): the cache holds no secret, and an
attacker cannot steer lookups in it. A verdict lives ``cache_s`` seconds (``AUTH_CACHE_S``);
then the key is read again by its id (one indexed query, shared by every request waiting on
it), so a revocation takes effect within ``cache_s`` in every process. The KDF runs again only
if the stored hash changed; it runs off the event loop.

If the key store is unreachable when a verdict expires, the last verdict is kept for another
``cache_s`` (scoring does not need SQL, so a database outage should not lock every client out);
a key never seen before gets ``Unavailable``.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from riskstream.core.errors import Forbidden, Unauthenticated, Unavailable
from riskstream.core.keys import ALL_SCOPES, Principal, Scope, StoredKey, key_id_of, verify_secret
from riskstream.core.ports import KeyStore

__all__ = ["ALL_SCOPES", "Authenticator", "Principal", "Scope", "bearer_secret"]

FIELD = "authorization"


def bearer_secret(authorization: str | None) -> str:
    """The secret in an ``Authorization`` header value (scheme case-insensitive, RFC 7235)."""
    if not authorization or not authorization.strip():
        raise Unauthenticated(
            "no API key: send the header 'Authorization: Bearer <key>'", field=FIELD
        )
    scheme, _, secret = authorization.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise Unauthenticated("the Authorization header must be 'Bearer <key>'", field=FIELD)
    return secret


@dataclass(frozen=True, slots=True)
class _Verdict:
    principal: Principal | None  # None: refused
    key_id: str
    secret_hash: str | None  # the stored hash the secret was checked against, if any
    secret_ok: bool | None  # that check's result; None if not checked (unknown or revoked key)
    expires: float


_UNKNOWN = "the API key is unknown or revoked"


class Authenticator:
    def __init__(
        self,
        keys: KeyStore,
        *,
        cache_s: float = 2.0,
        max_entries: int = 10_000,
        max_lookups: int = 4,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._ttl = cache_s
        self._max_entries = max_entries
        self._clock = clock
        self._wall = wall_clock
        self._pepper = secrets.token_bytes(32)
        self._cache: dict[bytes, _Verdict] = {}
        self._inflight: dict[bytes, asyncio.Future[_Verdict]] = {}
        # Unknown secrets each cost a query: a flood of them queues here, not in the pool.
        self._lookups = asyncio.Semaphore(max_lookups)
        self._used: dict[str, float] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal of a valid key, else ``Unauthenticated``."""
        secret = bearer_secret(authorization)
        digest = hashlib.blake2b(secret.encode(), key=self._pepper, digest_size=32).digest()
        verdict = self._cache.get(digest)
        if verdict is None or verdict.expires <= self._clock():
            verdict = await self._refresh(digest, secret, verdict)
        if verdict.principal is None:
            raise Unauthenticated(_UNKNOWN, field=FIELD)
        self._used[verdict.key_id] = self._wall()
        return verdict.principal

    async def require(self, authorization: str | None, scope: Scope) -> Principal:
        """The principal, if its key has ``scope`` (or ``admin``), else 401 or 403."""
        principal = await self.authenticate(authorization)
        if not principal.allows(scope):
            raise Forbidden(
                f"the API key {principal.name!r} lacks the {scope.value!r} scope this needs",
                field=FIELD,
            )
        return principal

    async def flush_usage(self) -> int:
        """Write the keys' last-used times gathered since the last flush (one batch); the
        caller runs this every few seconds. Returns how many keys were touched."""
        used, self._used = self._used, {}
        if not used:
            return 0
        try:
            await self._keys.touch(used)
        except BaseException:
            for key_id, moment in used.items():  # try again next time
                self._used[key_id] = max(moment, self._used.get(key_id, moment))
            raise
        return len(used)

    async def _refresh(self, digest: bytes, secret: str, previous: _Verdict | None) -> _Verdict:
        key_id = key_id_of(secret)
        if key_id is None:  # not one of our secrets: no lookup, nothing cached
            raise Unauthenticated(_UNKNOWN, field=FIELD)
        future = self._inflight.get(digest)
        if future is None:  # the first request to find it expired looks it up for all
            future = asyncio.ensure_future(self._check(digest, secret, key_id, previous))
            self._inflight[digest] = future
            future.add_done_callback(lambda done: self._settle(digest, done))
        return await asyncio.shield(future)

    def _settle(self, digest: bytes, future: asyncio.Future[_Verdict]) -> None:
        if self._inflight.get(digest) is future:
            del self._inflight[digest]
        if not future.cancelled():
            future.exception()  # retrieved, even if every waiter went away

    async def _check(
        self, digest: bytes, secret: str, key_id: str, previous: _Verdict | None
    ) -> _Verdict:
        try:
            async with self._lookups:
                stored = await self._keys.find(key_id)
        except Unavailable:
            if previous is None:
                raise
            verdict = _Verdict(
                previous.principal,
                previous.key_id,
                previous.secret_hash,
                previous.secret_ok,
                self._clock() + self._ttl,
            )
            self._store(digest, verdict)
            return verdict
        verdict = await self._judge(secret, key_id, stored, previous)
        self._store(digest, verdict)
        return verdict

    async def _judge(
        self, secret: str, key_id: str, stored: StoredKey | None, previous: _Verdict | None
    ) -> _Verdict:
        expires = self._clock() + self._ttl
        if stored is None or stored.revoked:
            return _Verdict(None, key_id, None, None, expires)
        if (
            previous is not None
            and previous.secret_ok is not None
            and previous.secret_hash == stored.secret_hash
        ):
            ok = previous.secret_ok
        else:
            ok = await asyncio.to_thread(verify_secret, secret, stored.secret_hash)
        principal = Principal(stored.name, stored.scopes) if ok else None
        return _Verdict(principal, key_id, stored.secret_hash, ok, expires)

    def _store(self, digest: bytes, verdict: _Verdict) -> None:
        self._cache.pop(digest, None)  # re-inserted last: the dict's order is insertion order
        if len(self._cache) >= self._max_entries:
            now = self._clock()
            for old in [d for d, v in self._cache.items() if v.expires <= now]:
                del self._cache[old]
            if len(self._cache) >= self._max_entries:  # drop the older half
                for old in list(self._cache)[: len(self._cache) // 2 + 1]:
                    del self._cache[old]
        self._cache[digest] = verdict
