"""The single-event fast path answers exactly as the FastAPI route it stands in front of."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from riskstream.bootstrap import create_app
from riskstream.settings import Settings
from riskstream.web.fast_path import SingleEventFastPath

from tests.support.fast_path import TwoPaths, client

T = ["2026-11-25T08:00:00Z", "2026-11-25T09:30:00Z", "2026-11-25T10:00:00Z"]
VALUES = [{"HR": 92, "Creatinine": 1.1}, {"HR": 101, "Temp": 38.2}, {"Creatinine": 1.6}]


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("entity_id", "scored_at")}


async def test_fast_path_and_route_score_and_advance_state_alike(two_paths: TwoPaths) -> None:
    a, b = (f"patient-{uuid.uuid4().hex[:8]}" for _ in range(2))
    handed_on = two_paths.handed_on
    async with client(two_paths.fast) as fast, client(two_paths.routed) as route:
        for i, (t, values) in enumerate(zip(T, VALUES)):
            event = {"event_id": f"e{i}", "time": t, "values": values}
            # alternate which entity goes which way: the state either path wrote, the other reads
            first, second = (fast, route) if i % 2 == 0 else (route, fast)
            ra = await first.post(f"/v1/entities/{a}/events", json=event)
            rb = await second.post(f"/v1/entities/{b}/events", json=event)
            assert ra.status_code == rb.status_code == 200, (ra.text, rb.text)
            assert ra.headers["content-type"] == rb.headers["content-type"]
            assert comparable(ra.json()) == comparable(rb.json())
            assert ra.json()["step"] == i + 1

        again = {"event_id": "e0", "time": T[0], "values": VALUES[0]}
        dup_fast = (await fast.post(f"/v1/entities/{b}/events", json=again)).json()
        dup_routed = (await route.post(f"/v1/entities/{a}/events", json=again)).json()
        assert dup_fast["duplicate"] is dup_routed["duplicate"] is True
        assert comparable(dup_fast) == comparable(dup_routed)

        late = {"event_id": "late", "time": "2026-11-25T07:00:00Z", "values": {}}
        late_fast = await fast.post(f"/v1/entities/{a}/events", json=late)
        late_routed = await route.post(f"/v1/entities/{b}/events", json=late)
        assert late_fast.status_code == late_routed.status_code == 409
        assert late_fast.json() == late_routed.json()
        assert handed_on == []  # the fast path served every request it got

        assert (await fast.get(f"/v1/entities/{a}/risk")).status_code == 200
        assert handed_on == [f"/v1/entities/{a}/risk"]


@pytest.mark.parametrize(
    ("content_type", "raw", "field"),
    [
        ("application/json", b'{"event_id": "e", "time": "yesterday"}', "time"),
        ("application/json", b'{"event_id": "e", "time": 1, "extra": 1}', "extra"),
        ("application/json", b"", "body"),
    ],
)
async def test_what_the_fast_path_does_not_take_the_route_answers(
    two_paths: TwoPaths, content_type: str, raw: bytes, field: str
) -> None:
    entity = f"patient-{uuid.uuid4().hex[:8]}"
    handed_on = two_paths.handed_on
    async with client(two_paths.fast) as fast, client(two_paths.routed) as route:
        answers = [
            await c.post(
                f"/v1/entities/{entity}/events", content=raw, headers={"content-type": content_type}
            )
            for c in (fast, route)
        ]
        assert [r.status_code for r in answers] == [422, 422]
        assert answers[0].json() == answers[1].json()
        assert answers[0].json()["error"]["field"] == field
        assert handed_on == [f"/v1/entities/{entity}/events"]
        assert (await fast.get(f"/v1/entities/{entity}/risk")).status_code == 404


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_body_not_declared_as_json_is_refused_with_415_by_both_paths_alike(
    two_paths: TwoPaths, content_type: str | None
) -> None:
    """A cross-site "simple" post (text/plain, a form) must not score anything."""
    entity = f"patient-{uuid.uuid4().hex[:8]}"
    raw = b'{"event_id": "e", "time": "2026-11-25T08:00:00Z"}'
    headers = {"content-type": content_type} if content_type else {}
    handed_on = two_paths.handed_on
    async with client(two_paths.fast) as fast, client(two_paths.routed) as route:
        answers = [
            await c.post(f"/v1/entities/{entity}/events", content=raw, headers=headers)
            for c in (fast, route)
        ]
        assert handed_on == []  # refused by the fast path itself
        assert [r.status_code for r in answers] == [415, 415]
        assert answers[0].content == answers[1].content
        error = answers[0].json()["error"]
        assert error["code"] == "unsupported_media_type"
        assert error["field"] == "content-type"
        assert (await fast.get(f"/v1/entities/{entity}/risk")).status_code == 404


def test_the_app_serves_through_the_fast_path_unless_told_not_to(settings: Settings) -> None:
    def layers(app: FastAPI) -> list[Any]:
        return [middleware.cls for middleware in app.user_middleware]

    assert SingleEventFastPath in layers(create_app(settings))
    assert SingleEventFastPath not in layers(create_app(settings, fast_path=False))
