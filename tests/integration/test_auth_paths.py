"""Access control on the single-event route answers the same through the fast path and through
FastAPI (the route's dependencies): same status, headers and bytes for each refusal."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from riskstream.adapters.sql.keys import SqlKeyStore
from riskstream.core.keys import new_key
from riskstream.settings import Settings
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.fast_path import TwoPaths, client

EVENT = {"event_id": "e1", "time": "2026-11-25T08:00:00Z", "values": {"HR": 92}}
UNKNOWN = "rsk_0123456789abcdef_" + "A" * 43  # shaped like a secret, stored nowhere
HEADERS = ("content-type", "content-length", "www-authenticate", "retry-after")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # a burst of 2, refilled so slowly that the bucket's wait is the same on every refusal
    return settings.model_copy(
        update={"auth": True, "rate_limit_burst": 2, "rate_limit_events_s": 1e-6}
    )


async def make_key(engine: AsyncEngine, *scopes: str, revoked: bool = False) -> str:
    store = SqlKeyStore(engine)
    made = new_key(f"t-{uuid.uuid4().hex[:12]}", list(scopes))
    await store.create(made.key)
    if revoked:
        await store.revoke(made.key.name)
    return made.secret


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


async def both(paths: TwoPaths, headers: dict[str, str]) -> tuple[httpx.Response, httpx.Response]:
    """The same request to an entity of its own through each path."""
    answers = []
    for asgi in (paths.fast, paths.routed):
        async with client(asgi) as c:
            entity = f"p-{uuid.uuid4().hex[:8]}"
            answers.append(
                await c.post(f"/v1/entities/{entity}/events", json=EVENT, headers=headers)
            )
    assert paths.handed_on == [], "the fast path handed on a request it should answer"
    fast, routed = answers
    return fast, routed


def same(fast: httpx.Response, routed: httpx.Response) -> dict[str, Any]:
    assert fast.status_code == routed.status_code, (fast.text, routed.text)
    for name in HEADERS:
        assert fast.headers.get(name) == routed.headers.get(name), name
    assert fast.content == routed.content
    body: dict[str, Any] = fast.json()
    return body


@pytest.mark.parametrize(
    "case", ["no key", "not bearer", "unknown key", "wrong scope", "revoked key"]
)
async def test_refusals_are_the_same_bytes_on_both_paths(
    two_paths: TwoPaths, sql_engine: AsyncEngine, case: str
) -> None:
    headers = {
        "no key": {},
        "not bearer": {"authorization": "Basic dXNlcjpwYXNz"},
        "unknown key": bearer(UNKNOWN),
        "wrong scope": bearer(await make_key(sql_engine, "read")),
        "revoked key": bearer(await make_key(sql_engine, "ingest", revoked=True)),
    }[case]
    fast, routed = await both(two_paths, headers)
    body = same(fast, routed)
    if case == "wrong scope":
        assert fast.status_code == 403
        assert body["error"]["code"] == "forbidden"
        assert "'ingest'" in body["error"]["message"]
        assert "www-authenticate" not in fast.headers
    else:
        assert fast.status_code == 401
        assert body["error"]["code"] == "unauthenticated"
        assert fast.headers["www-authenticate"] == "Bearer"


async def test_rate_limited_and_success_alike_on_both_paths(
    two_paths: TwoPaths, sql_engine: AsyncEngine
) -> None:
    headers = bearer(await make_key(sql_engine, "ingest"))
    fast, routed = await both(two_paths, headers)  # the burst of 2: one each way
    assert fast.status_code == routed.status_code == 200, (fast.text, routed.text)
    assert fast.headers["content-type"] == routed.headers["content-type"]
    drop = ("entity_id", "scored_at")
    assert {k: v for k, v in fast.json().items() if k not in drop} == {
        k: v for k, v in routed.json().items() if k not in drop
    }

    fast, routed = await both(two_paths, headers)  # the bucket is empty
    body = same(fast, routed)
    assert fast.status_code == 429
    assert body["error"]["code"] == "rate_limited"
    assert int(fast.headers["retry-after"]) >= 1


async def test_a_refused_post_scores_nothing(two_paths: TwoPaths, sql_engine: AsyncEngine) -> None:
    reader = bearer(await make_key(sql_engine, "read", "ingest"))
    entity = f"p-{uuid.uuid4().hex[:8]}"
    async with client(two_paths.fast) as c:
        refused = await c.post(f"/v1/entities/{entity}/events", json=EVENT)
        assert refused.status_code == 401
        assert (await c.get(f"/v1/entities/{entity}/risk", headers=reader)).status_code == 404
