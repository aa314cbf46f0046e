"""Every error in the one shape, with the right status and field; bulk NDJSON lines fail alone."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.support.fast_path import TwoPaths, client
from tests.support.service import Running

T = "2026-11-25T08:00:00Z"


def entity() -> str:
    return f"patient-{uuid.uuid4().hex[:10]}"


def line(entity_id: str, event_id: str, hour: int) -> bytes:
    return (
        f'{{"entity_id": "{entity_id}", "event_id": "{event_id}", '
        f'"time": "2026-11-25T{8 + hour:02d}:00:00Z", "values": {{"HR": 80}}}}'
    ).encode()


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert error["status"] == response.status_code
    return error


NESTED = (
    b'{"event_id": "e", "time": "'
    + T.encode()
    + b'", "values": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}"
)
BAD_UTF8 = b'{"event_id": "e\xff\xfe", "time": "' + T.encode() + b'", "values": {}}'


@pytest.mark.parametrize("raw", [NESTED, BAD_UTF8], ids=["deeply-nested", "invalid-utf8"])
async def test_malformed_bodies_get_422_invalid_input_on_the_body(
    service: Running, raw: bytes
) -> None:
    e = entity()
    single = await service.client.post(
        f"/v1/entities/{e}/events", content=raw, headers={"content-type": "application/json"}
    )
    bulk = await service.client.post(
        "/v1/events",
        content=b"[" + raw[:-1] + b', "entity_id": "x"}]',
        headers={"content-type": "application/json"},
    )
    for response in (single, bulk):
        assert response.status_code == 422, response.text
        error = error_of(response)
        assert (error["code"], error["field"]) == ("invalid_input", "body")
    assert (await service.client.get(f"/v1/entities/{e}/risk")).status_code == 404


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_bulk_writes_not_declared_as_json_or_ndjson_get_415(
    service: Running, content_type: str | None
) -> None:
    e = entity()
    headers = {"content-type": content_type} if content_type else {}
    response = await service.client.post(
        "/v1/events", content=b"[" + line(e, "a", 0) + b"]", headers=headers
    )
    assert response.status_code == 415, response.text
    error = error_of(response)
    assert error["code"] == "unsupported_media_type"
    assert (await service.client.get(f"/v1/entities/{e}/risk")).status_code == 404


async def test_an_unparseable_ndjson_line_fails_alone_and_is_named_by_its_line(
    service: Running,
) -> None:
    e = entity()
    body = b"\n".join(
        [
            line(e, "a", 0),
            b"",
            line(e, "b", 1),
            b'{"entity_id": "' + e.encode() + b'", broken',
            line(e, "c", 2),
            b"",
        ]
    )
    response = await service.client.post(
        "/v1/events", content=body, headers={"content-type": "application/x-ndjson"}
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["accepted"], result["rejected"]) == (3, 1)
    # index counts the non-empty lines, as a JSON array's position would; the message names the
    # line of the body (the 4th, after a blank one)
    assert [r["index"] for r in result["results"]] == [0, 1, 2, 3]
    broken = result["results"][2]
    assert broken["status"] == 422
    assert broken["error"]["code"] == "invalid_input" and broken["error"]["field"] == "body"
    assert broken["error"]["message"].startswith("line 4 ")
    assert [r.get("event_id") for r in result["results"]] == ["a", "b", None, "c"]
    latest = (await service.client.get(f"/v1/entities/{e}/risk")).json()
    assert (latest["step"], latest["event_id"]) == (3, "c")


async def test_unknown_routes_and_methods_keep_the_one_shape(service: Running) -> None:
    missing = await service.client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "not_found"
    wrong = await service.client.put("/v1/events", json=[])
    assert wrong.status_code == 405
    assert error_of(wrong)["code"] == "method_not_allowed"


async def test_the_fast_path_and_the_route_send_the_same_bytes(two_paths: TwoPaths) -> None:
    """The same request answered by the fast path and by the FastAPI route behind it (a re-sent
    event, and a refused one) gives the same bytes: one response model, one serializer."""
    e = entity()
    event = {"event_id": "e1", "time": T, "values": {"HR": 97.0, "Creatinine": 1.4}}
    async with client(two_paths.fast) as fast, client(two_paths.routed) as routed:
        first = await fast.post(f"/v1/entities/{e}/events", json=event)
        assert first.status_code == 200
        again = [await c.post(f"/v1/entities/{e}/events", json=event) for c in (fast, routed)]
        assert again[0].content == again[1].content  # the same duplicate answer, byte for byte
        late = {**event, "event_id": "late", "time": "2026-11-25T07:00:00Z"}
        refused = [await c.post(f"/v1/entities/{e}/events", json=late) for c in (fast, routed)]
        assert refused[0].status_code == 409
        assert refused[0].content == refused[1].content
        assert refused[0].headers["content-type"] == refused[1].headers["content-type"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/scores", {"cursor": ""}, "cursor"),
        ("/v1/stream", {"cursor": ""}, "cursor"),
        ("/v1/entities/p1/scores", {"since": "0.5"}, "since"),
        ("/v1/entities/p1/scores", {"since": "2026-11-25"}, "since"),
        ("/v1/entities/p1/scores", {"since": "2026-11-25T08:00:00"}, "since"),
    ],
)
async def test_query_values_the_description_excludes_are_refused(
    service: Running, path: str, params: dict[str, str], field: str
) -> None:
    """An empty cursor and a since that is not an RFC 3339 date-time with an offset are outside
    what /openapi.json allows; the server refuses them too instead of reading them loosely."""
    response = await service.client.get(path, params=params)
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field


async def test_since_takes_an_rfc_3339_date_time(service: Running) -> None:
    for since in ("2026-11-25T08:00:00Z", "2026-11-25t08:00:00.5+01:00"):
        response = await service.client.get("/v1/entities/p1/scores", params={"since": since})
        assert response.status_code == 200, (since, response.text)
