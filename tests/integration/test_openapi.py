"""The OpenAPI description is the truth: it validates, it follows this server's settings and
model, every operation declares its models, the docs UI needs no CDN, and a client generated from
it round-trips every route against the live service."""

from __future__ import annotations

import asyncio
import importlib
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from riskstream.adapters.sql.keys import SqlKeyStore
from riskstream.core.domain import ID_PATTERN
from riskstream.core.keys import new_key
from riskstream.settings import Settings
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.service import Running

T = "2026-11-25T08:00:00Z"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_id_length": 64, "auth": True})


@pytest.fixture
async def secret(service: Running, sql_engine: AsyncEngine) -> str:
    """An admin key; the test client sends it (the generated client sends its own)."""
    made = new_key(f"openapi-{uuid.uuid4().hex[:12]}", ["admin"])
    await SqlKeyStore(sql_engine).create(made.key)
    service.client.headers["authorization"] = f"Bearer {made.secret}"
    return made.secret


@pytest.fixture
async def doc(service: Running) -> dict[str, Any]:
    response = await service.client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield method, path, op


async def test_the_description_validates(doc: dict[str, Any]) -> None:
    validate(doc)


OPEN = {"/healthz", "/readyz"}


async def test_every_guarded_operation_declares_the_bearer_scheme_and_its_refusals(
    doc: dict[str, Any],
) -> None:
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    for method, path, op in operations(doc):
        where = f"{method} {path}"
        if path in OPEN:
            assert "security" not in op, where
            assert "401" not in op["responses"], where
            continue
        assert op["security"] == [{"bearer": []}], where
        assert {"401", "403"} <= set(op["responses"]), where
        assert "WWW-Authenticate" in op["responses"]["401"]["headers"], where
        limited = method == "post" or path == "/v1/stream"
        assert ("429" in op["responses"]) == limited, where
        if limited:
            assert "Retry-After" in op["responses"]["429"]["headers"], where


async def test_every_api_operation_declares_its_bodies_and_an_example(
    doc: dict[str, Any],
) -> None:
    api = [(m, p, op) for m, p, op in operations(doc) if p.startswith("/v1/")]
    assert len(api) == 11
    for method, path, op in api:
        where = f"{method} {path}"
        ok = op["responses"]["200"]["content"]
        [(media, body)] = ok.items()
        if path == "/v1/stream":
            assert media == "text/event-stream", where
        else:
            assert media == "application/json", where
            assert body["schema"]["$ref"].startswith("#/components/schemas/"), where
        assert "example" in body, where
        errors = {s: r for s, r in op["responses"].items() if s[0] in "45"}
        assert errors or path == "/v1/model", where
        for status, response in errors.items():
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (where, status)
        if method == "post":
            assert "415" in errors and "413" in errors, where
    for path in ("/v1/watchlist", "/v1/scores"):
        assert "304" in doc["paths"][path]["get"]["responses"]


@pytest.mark.usefixtures("secret")
async def test_inputs_are_described_as_the_server_enforces_them(
    doc: dict[str, Any], service: Running
) -> None:
    schemas = doc["components"]["schemas"]
    ident = {"pattern": ID_PATTERN, "minLength": 1, "maxLength": 64}  # MAX_ID_LENGTH here
    for model, name in (
        ("EventIn", "event_id"),
        ("BulkEventIn", "event_id"),
        ("BulkEventIn", "entity_id"),
    ):
        assert ident.items() <= schemas[model]["properties"][name].items(), (model, name)
    single = doc["paths"]["/v1/entities/{entity_id}/events"]["post"]
    [path_id] = single["parameters"]
    assert ident.items() <= path_id["schema"].items()
    time = schemas["EventIn"]["properties"]["time"]
    assert time["anyOf"] == [
        {"type": "string", "format": "date-time"},
        {"type": "number", "description": "seconds since the Unix epoch, UTC"},
    ]
    values = schemas["EventIn"]["properties"]["values"]
    manifest = service.services.model.manifest
    features = manifest.feature_names
    assert values["additionalProperties"] is False and list(values["properties"]) == list(features)
    for feature in manifest.features:
        number, null = values["properties"][feature.name]["anyOf"]
        assert null == {"type": "null"}
        low, high = feature.range or (-3.4028234663852886e38, 3.4028234663852886e38)
        assert (number["type"], number["minimum"], number["maximum"]) == ("number", low, high)
    assert schemas["BulkEventIn"]["properties"]["values"] == values
    bulk = doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    assert set(bulk) == {"application/json", "application/x-ndjson"}
    outputs = list(service.services.model.manifest.output_names)
    for path in ("/v1/watchlist", "/v1/stream"):
        params = {p["name"]: p for p in doc["paths"][path]["get"]["parameters"]}
        assert params["output"]["schema"] == {"type": "string", "enum": outputs}
    # what the schema allows, the server takes; what it refuses, the schema excludes
    e = "p-" + "x" * 62
    assert (
        await service.client.post(f"/v1/entities/{e}/events", json={"event_id": "a", "time": T})
    ).status_code == 200
    too_long = await service.client.post(
        f"/v1/entities/{e}x/events", json={"event_id": "a", "time": T}
    )
    assert too_long.status_code == 422
    empty = await service.client.post(f"/v1/entities/{e}/events", json={"event_id": "", "time": T})
    assert empty.status_code == 422 and not re.fullmatch(ID_PATTERN, "")
    assert (await service.client.get("/v1/watchlist", params={"output": ""})).status_code == 422


async def test_the_docs_load_nothing_from_another_host(service: Running) -> None:
    for page in ("/docs", "/redoc"):
        response = await service.client.get(page)
        assert "default-src 'self'" in response.headers["content-security-policy"]
        html = response.text
        assert "openapi.json" in html
        assert page == "/redoc" or '"validatorUrl": null' in html
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", html), (page, html)
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
        assets = [u for u in urls if u.endswith((".js", ".css"))]
        assert assets, page
        for url in assets:
            response = await service.client.get(url)
            assert response.status_code == 200, url
            assert len(response.content) > 10_000, url


def generate_client(doc_path: Path, out: Path) -> None:
    """openapi-python-client, as a client author would run it. The NDJSON body of bulk is the
    one thing it cannot express (it says so and generates the JSON body)."""
    tool = Path(sys.executable).with_name("openapi-python-client")
    done = subprocess.run(
        [
            str(tool),
            "generate",
            "--path",
            str(doc_path),
            "--output-path",
            str(out),
            "--meta",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    warnings = re.findall(r"WARNING parsing (\S+ \S+)", done.stdout + done.stderr)
    assert warnings in ([], ["POST /v1/events"]), done.stdout


async def test_a_generated_client_round_trips_every_route(
    service: Running, tmp_path: Path, secret: str
) -> None:
    doc_path = tmp_path / "openapi.json"
    doc_path.write_bytes((await service.client.get("/openapi.json")).content)
    generate_client(doc_path, tmp_path / "rs_client")
    sys.path.insert(0, str(tmp_path))
    try:
        await round_trip(service, "rs_client", secret)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == "rs_client" or n.startswith("rs_client.")]:
            del sys.modules[name]


async def round_trip(service: Running, package: str, secret: str) -> None:
    def mod(name: str) -> Any:
        return importlib.import_module(f"{package}.{name}")

    models = mod("models")
    # the generated client sends the key itself, as the bearer scheme tells it to
    client = mod("client").AuthenticatedClient(
        base_url="http://riskstream",
        token=secret,
        raise_on_unexpected_status=True,
        httpx_args={"transport": httpx.ASGITransport(app=service.app)},
    )

    events, entities, dashboards, system = (
        mod(f"api.{tag}") for tag in ("events", "entities", "dashboards", "system")
    )
    output = service.services.model.manifest.output_names[0]
    e = "client-" + service.services.settings.key_prefix

    body = models.EventIn.from_dict({"event_id": "e1", "time": T, "values": {"HR": 90.0}})
    scored = await importlib.import_module(f"{events.__name__}.post_event").asyncio(
        e, client=client, body=body
    )
    assert isinstance(scored, models.EventOut), scored
    assert (scored.entity_id, scored.step, scored.duplicate) == (e, 1, False)
    assert scored.time.isoformat() == "2026-11-25T08:00:00+00:00"

    late = models.EventIn.from_dict({"event_id": "e0", "time": 1795510000, "values": {}})
    refused = await importlib.import_module(f"{events.__name__}.post_event").asyncio(
        e, client=client, body=late
    )
    assert isinstance(refused, models.ErrorOut) and refused.error.code == "out_of_order"

    bulk_items = [
        models.BulkEventIn.from_dict(
            {"entity_id": e, "event_id": "e2", "time": "2026-11-25T09:00:00Z", "values": {}}
        ),
        models.BulkEventIn.from_dict(
            {
                "entity_id": e,
                "event_id": "e3",
                "time": "2026-11-25T07:00:00Z",
                "values": {"HR": 1.0},
            }
        ),
    ]
    bulk = await importlib.import_module(f"{events.__name__}.post_events").asyncio(
        client=client, body=bulk_items
    )
    assert isinstance(bulk, models.BulkOut), bulk
    assert (bulk.accepted, bulk.rejected) == (1, 1)
    ok, bad = bulk.results
    assert isinstance(ok, models.BulkScoredOut) and ok.step == 2
    assert isinstance(bad, models.BulkErrorOut) and (bad.status, bad.error.code) == (
        409,
        "out_of_order",
    )

    risk = await importlib.import_module(f"{entities.__name__}.get_risk").asyncio(e, client=client)
    assert isinstance(risk, models.LatestRiskOut) and risk.step == 2
    unknown = await importlib.import_module(f"{entities.__name__}.get_risk").asyncio(
        e + "-none", client=client
    )
    assert isinstance(unknown, models.ErrorOut) and unknown.error.status == 404

    history = importlib.import_module(f"{entities.__name__}.get_scores")
    for _ in range(200):  # the outbox drains asynchronously
        page = await history.asyncio(e, client=client, include_values=True)
        assert isinstance(page, models.ScorePage)
        if len(page.scores) == 2:
            break
        await _pause()
    assert [s.step for s in page.scores] == [1, 2]
    assert page.scores[0].values.to_dict() == {"HR": 90.0}

    watchlist = importlib.import_module(f"{dashboards.__name__}.watchlist")
    watch = await watchlist.asyncio(
        client=client, output=models.WatchlistOutput(output), limit=1000
    )
    assert isinstance(watch, models.WatchlistOut), watch
    assert e in {w.entity_id for w in watch.entities}

    feed = await importlib.import_module(f"{dashboards.__name__}.feed").asyncio(
        client=client, limit=5000
    )
    assert isinstance(feed, models.FeedOut)
    assert [s.step for s in feed.scores if s.entity_id == e] == [1, 2]
    expired = await importlib.import_module(f"{dashboards.__name__}.stream").asyncio_detailed(
        client=client, cursor="not-a-cursor"
    )
    assert expired.status_code == 422 and isinstance(expired.parsed, models.ErrorOut)

    model = await importlib.import_module(f"{system.__name__}.get_model").asyncio(client=client)
    assert isinstance(model, models.Manifest)
    assert model.name == service.services.model.manifest.name
    health = await importlib.import_module(f"{system.__name__}.healthz").asyncio_detailed(
        client=client
    )
    assert health.status_code == 200
    ready = await importlib.import_module(f"{system.__name__}.readyz").asyncio_detailed(
        client=client
    )
    assert ready.status_code == 200
    metrics = await importlib.import_module(f"{system.__name__}.metrics").asyncio(client=client)
    assert "riskstream_http_request_duration_seconds" in metrics

    forgotten = await importlib.import_module(f"{entities.__name__}.forget").asyncio(
        e, client=client
    )
    assert isinstance(forgotten, models.ForgottenOut) and forgotten.forgotten


async def _pause() -> None:
    await asyncio.sleep(0.05)
