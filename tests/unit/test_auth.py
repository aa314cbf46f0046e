"""The authenticator and the key vocabulary, with an in-memory key store and a fake clock."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping

import pytest
from riskstream.core.auth import Authenticator, bearer_secret
from riskstream.core.errors import (
    AlreadyExists,
    Forbidden,
    InvalidInput,
    Unauthenticated,
    Unavailable,
)
from riskstream.core.keys import (
    KeyInfo,
    Principal,
    Scope,
    StoredKey,
    hash_secret,
    key_id_of,
    new_key,
    parse_scopes,
    stored_scopes,
    verify_secret,
)


class FakeKeys:
    """The KeyStore port in memory; counts lookups and can fail like a database that is down."""

    def __init__(self) -> None:
        self.keys: dict[str, StoredKey] = {}
        self.finds = 0
        self.touched: list[dict[str, float]] = []
        self.down = False
        self.gate: asyncio.Event | None = None
        self.at_gate = asyncio.Event()  # a lookup waits at the gate

    async def find(self, key_id: str) -> StoredKey | None:
        self.finds += 1
        if self.gate is not None:
            self.at_gate.set()
            await self.gate.wait()
        if self.down:
            raise Unavailable("the database is unreachable")
        return self.keys.get(key_id)

    async def touch(self, used: Mapping[str, float]) -> None:
        if self.down:
            raise Unavailable("the database is unreachable")
        self.touched.append(dict(used))

    async def create(self, key: StoredKey) -> None:
        if any(k.name == key.name for k in self.keys.values()):
            raise AlreadyExists(f"a key named {key.name!r} exists")
        self.keys[key.key_id] = key

    async def list(self) -> list[KeyInfo]:
        return [KeyInfo(k.name, k.scopes, 0.0, None, k.revoked) for k in self.keys.values()]

    async def revoke(self, name: str) -> bool:
        for key_id, key in self.keys.items():
            if key.name == name:
                self.keys[key_id] = dataclasses.replace(key, revoked=True)
                return True
        return False

    async def count(self) -> int:
        return len(self.keys)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys() -> FakeKeys:
    return FakeKeys()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(keys: FakeKeys, clock: Clock) -> Authenticator:
    return Authenticator(keys, cache_s=2.0, clock=clock, wall_clock=clock)


async def add(keys: FakeKeys, name: str, *scopes: str) -> str:
    made = new_key(name, scopes)
    await keys.create(made.key)
    return made.secret


def bearer(secret: str) -> str:
    return f"Bearer {secret}"


def test_secret_format_and_hash() -> None:
    made = new_key("ingest-1", ["ingest"])
    assert made.secret.startswith(f"rsk_{made.key.key_id}_")
    assert key_id_of(made.secret) == made.key.key_id
    assert made.secret not in made.key.secret_hash
    assert verify_secret(made.secret, made.key.secret_hash)
    assert not verify_secret(made.secret + "x", made.key.secret_hash)
    assert not verify_secret(made.secret, "not-a-hash")
    # salted: the same secret hashes differently each time, and both verify
    again = hash_secret(made.secret)
    assert again != made.key.secret_hash
    assert verify_secret(made.secret, again)
    assert key_id_of("rsk_short_x") is None
    assert key_id_of("Bearer " + made.secret) is None


def test_scopes() -> None:
    assert parse_scopes(["read", "ingest", "read"]) == {Scope.READ, Scope.INGEST}
    with pytest.raises(InvalidInput, match="unknown scope 'write'"):
        parse_scopes(["write"])
    with pytest.raises(InvalidInput, match="at least one scope"):
        parse_scopes([])
    assert stored_scopes(["read", "from-a-later-version"]) == {Scope.READ}
    admin = Principal("a", frozenset({Scope.ADMIN}))
    assert all(admin.allows(scope) for scope in Scope)
    reader = Principal("r", frozenset({Scope.READ}))
    assert reader.allows(Scope.READ)
    assert not reader.allows(Scope.INGEST)
    assert not reader.allows(Scope.ADMIN)


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, "ü"])
def test_key_names_are_checked(name: str) -> None:
    with pytest.raises(InvalidInput):
        new_key(name, ["read"])


@pytest.mark.parametrize(
    "header", [None, "", "   ", "Bearer", "Bearer   ", "Basic dXNlcjpwdw==", "Token abc"]
)
def test_a_missing_or_malformed_header_is_unauthenticated(header: str | None) -> None:
    with pytest.raises(Unauthenticated) as caught:
        bearer_secret(header)
    assert caught.value.status == 401
    assert caught.value.code == "unauthenticated"
    assert caught.value.field == "authorization"


def test_the_scheme_is_case_insensitive() -> None:
    assert bearer_secret("bearer abc") == "abc"
    assert bearer_secret("BEARER   abc ") == "abc"


async def test_a_valid_key_authenticates_and_is_cached(auth: Authenticator, keys: FakeKeys) -> None:
    secret = await add(keys, "reader", "read")
    principal = await auth.authenticate(bearer(secret))
    assert principal == Principal("reader", frozenset({Scope.READ}))
    for _ in range(100):
        assert await auth.authenticate(bearer(secret)) == principal
    assert keys.finds == 1


async def test_unknown_wrong_and_malformed_secrets(auth: Authenticator, keys: FakeKeys) -> None:
    secret = await add(keys, "reader", "read")
    key_id = key_id_of(secret)
    assert key_id is not None
    wrong = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    unknown = new_key("never-stored", ["read"]).secret
    for attempt in (wrong, unknown):
        with pytest.raises(Unauthenticated, match="unknown or revoked"):
            await auth.authenticate(bearer(attempt))
    finds = keys.finds
    with pytest.raises(Unauthenticated):
        await auth.authenticate(bearer("not-one-of-ours"))
    assert keys.finds == finds  # no lookup for what cannot be a secret
    # refusals are cached too: trying again costs no lookup within the TTL
    for attempt in (wrong, unknown):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(bearer(attempt))
    assert keys.finds == finds
    # and the right secret of that key id still works
    assert (await auth.authenticate(bearer(secret))).name == "reader"


async def test_scopes_are_enforced(auth: Authenticator, keys: FakeKeys) -> None:
    reader = await add(keys, "reader", "read")
    admin = await add(keys, "root", "admin")
    assert (await auth.require(bearer(reader), Scope.READ)).name == "reader"
    with pytest.raises(Forbidden) as caught:
        await auth.require(bearer(reader), Scope.INGEST)
    assert caught.value.status == 403
    assert caught.value.code == "forbidden"
    assert "'ingest' scope" in caught.value.message
    for scope in Scope:
        assert (await auth.require(bearer(admin), scope)).name == "root"
    with pytest.raises(Unauthenticated):
        await auth.require(None, Scope.READ)


async def test_a_revocation_takes_effect_when_the_cache_expires(
    auth: Authenticator, keys: FakeKeys, clock: Clock
) -> None:
    secret = await add(keys, "ingester", "ingest")
    await auth.authenticate(bearer(secret))
    await keys.revoke("ingester")
    clock.now += 1.9
    await auth.authenticate(bearer(secret))  # still cached: at most cache_s late
    clock.now += 0.2
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        await auth.authenticate(bearer(secret))
    assert keys.finds == 2


async def test_a_refresh_does_not_run_the_kdf_again(
    auth: Authenticator, keys: FakeKeys, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = await add(keys, "reader", "read")
    await auth.authenticate(bearer(secret))
    calls = []

    def counting(secret: str, secret_hash: str) -> bool:
        calls.append(secret_hash)
        return verify_secret(secret, secret_hash)

    monkeypatch.setattr("riskstream.core.auth.verify_secret", counting)
    for _ in range(3):
        clock.now += 5
        await auth.authenticate(bearer(secret))
    assert keys.finds == 4
    assert calls == []
    # a changed hash (the key's secret rotated) is checked again, and the old secret refused
    key_id = key_id_of(secret)
    assert key_id is not None
    keys.keys[key_id] = dataclasses.replace(keys.keys[key_id], secret_hash=hash_secret("other"))
    clock.now += 5
    with pytest.raises(Unauthenticated):
        await auth.authenticate(bearer(secret))
    assert len(calls) == 1


async def test_concurrent_requests_share_one_lookup(auth: Authenticator, keys: FakeKeys) -> None:
    secret = await add(keys, "reader", "read")
    keys.gate = asyncio.Event()
    waiting = [asyncio.ensure_future(auth.authenticate(bearer(secret))) for _ in range(50)]
    await asyncio.wait_for(keys.at_gate.wait(), timeout=5)  # the 50 asked before the lookup ran
    keys.gate.set()
    principals = await asyncio.gather(*waiting)
    assert {p.name for p in principals} == {"reader"}
    assert keys.finds == 1


async def test_a_cancelled_request_does_not_cancel_the_shared_lookup(
    auth: Authenticator, keys: FakeKeys
) -> None:
    secret = await add(keys, "reader", "read")
    keys.gate = asyncio.Event()
    first = asyncio.ensure_future(auth.authenticate(bearer(secret)))
    second = asyncio.ensure_future(auth.authenticate(bearer(secret)))
    await asyncio.wait_for(keys.at_gate.wait(), timeout=5)
    first.cancel()
    keys.gate.set()
    assert (await second).name == "reader"
    assert first.cancelled()
    assert keys.finds == 1


async def test_a_store_outage_keeps_known_verdicts_and_refuses_new_keys(
    auth: Authenticator, keys: FakeKeys, clock: Clock
) -> None:
    known = await add(keys, "known", "read")
    fresh = await add(keys, "fresh", "read")
    await auth.authenticate(bearer(known))
    keys.down = True
    clock.now += 10
    assert (await auth.authenticate(bearer(known))).name == "known"
    with pytest.raises(Unavailable):
        await auth.authenticate(bearer(fresh))
    keys.down = False
    clock.now += 10
    assert (await auth.authenticate(bearer(fresh))).name == "fresh"


async def test_usage_is_flushed_in_one_batch(
    auth: Authenticator, keys: FakeKeys, clock: Clock
) -> None:
    a = await add(keys, "a", "read")
    b = await add(keys, "b", "ingest")
    await auth.authenticate(bearer(a))
    clock.now += 1
    await auth.authenticate(bearer(b))
    clock.now += 1
    await auth.authenticate(bearer(a))
    assert await auth.flush_usage() == 2
    ids = {key_id_of(a): 1002.0, key_id_of(b): 1001.0}
    assert keys.touched == [ids]
    assert await auth.flush_usage() == 0
    # a failed flush is retried with the next one
    await auth.authenticate(bearer(b))
    keys.down = True
    with pytest.raises(Unavailable):
        await auth.flush_usage()
    keys.down = False
    assert await auth.flush_usage() == 1
    assert keys.touched[-1] == {key_id_of(b): 1002.0}


async def test_the_cache_is_bounded(keys: FakeKeys, clock: Clock) -> None:
    auth = Authenticator(keys, cache_s=60, max_entries=10, clock=clock, wall_clock=clock)
    for _ in range(25):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(bearer(new_key("nobody", ["read"]).secret))
    assert len(auth._cache) <= 10
