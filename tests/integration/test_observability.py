"""Operations can see: each request's id in its response and on every log line it causes (text
or JSON, one format for uvicorn's lines and ours), and /metrics with the series operators need,
valid Prometheus text (parsed, and checked by promtool when it is installed), summed over worker
processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from riskstream.adapters.redis_common import ViewKeys
from riskstream.bench.server import session_members
from riskstream.bootstrap import create_app
from riskstream.settings import Settings

from tests.support.processes import RedisServer
from tests.support.server import ServerProcess
from tests.support.service import Running, server_env

T0 = 1_790_000_000
VALUE_TEXT = "93.8125"  # a feature value: never in a log line
OUTCOMES = {"scored", "duplicate", "late", "invalid", "unavailable"}
GENERATED = re.compile(r"^[0-9a-f]{32}$")
BUILD_LABELS = {"version", "model", "model_version", "python", "onnxruntime"}
PROCESS_SERIES = {
    "process_cpu_seconds",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
}


def event(event_id: str, t: float, hr: float = 80.0) -> dict[str, Any]:
    return {"event_id": event_id, "time": t, "values": {"HR": hr}}


def families(text: str) -> dict[str, Any]:
    """The exposition parsed by the client library's parser (which refuses malformed text)."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str, name: str) -> list[Sample]:
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def value(text: str, name: str, **labels: str) -> float:
    return sum(s.value for s in samples(text, name) if labels.items() <= s.labels.items())


def promtool(text: str) -> None:
    """``promtool check metrics`` (exposition and naming lint) when the binary is on PATH."""
    binary = shutil.which("promtool")
    if binary is None:
        return
    done = subprocess.run(
        [binary, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60
    )
    assert done.returncode == 0, (done.stdout + done.stderr).decode()


# -- the request id ----------------------------------------------------------------------


async def test_request_id_is_taken_when_safe_else_made_and_always_echoed(
    service: Running, key_prefix: str
) -> None:
    client, single = service.client, f"/v1/entities/{key_prefix}-r1/events"
    ok = await client.post(single, json=event("e1", T0), headers={"X-Request-ID": "abc-123.x"})
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "abc-123.x"  # the fast path
    made = [(await client.get("/healthz")).headers["x-request-id"] for _ in range(2)]
    assert all(GENERATED.match(m) for m in made) and made[0] != made[1]
    uuid_like = "3f2b8c1e-5d4a-4e2b-9c7d-1a2b3c4d5e6f"
    assert (await client.get("/healthz", headers={"X-Request-ID": uuid_like})).headers[
        "x-request-id"
    ] == uuid_like
    for unsafe in ("a" * 129, "two words", 'quote"d', "-leading", "new\\nline", "é"):
        r = await client.get("/healthz", headers={"X-Request-ID": unsafe.encode()})
        assert GENERATED.match(r.headers["x-request-id"]), unsafe
    # every answer carries one: errors from the route, FastAPI, and the middlewares before them
    answers = [
        await client.post(single, json={"event_id": "e2"}),  # 422, the route
        await client.post(single, content=b"{}"),  # 415, the fast path
        await client.get("/no/such/route"),  # 404
        await client.post("/v1/events", content=b"x" * 2_000_000, headers=JSON),  # 413
    ]
    assert [a.status_code for a in answers] == [422, 415, 404, 413]
    for answer in answers:
        assert GENERATED.match(answer.headers["x-request-id"]), answer.status_code


JSON = {"content-type": "application/json"}


# -- counters of events by outcome ---------------------------------------------------------


async def test_events_are_counted_by_outcome(
    settings: Settings, tmp_path: Path, key_prefix: str
) -> None:
    """Entity names of this test's own: a late event is looked up in the shared score log."""
    o1, o2 = f"{key_prefix}-o1", f"{key_prefix}-o2"
    own_redis = RedisServer(tmp_path / "own-redis")  # stopped below: unavailable
    app = create_app(settings.model_copy(update={"redis_url": own_redis.url}))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://rs") as client:
                before = (await client.get("/metrics")).text
                assert {
                    s.labels["outcome"] for s in samples(before, "riskstream_events_total")
                } == OUTCOMES  # all at 0 from the start
                assert value(before, "riskstream_events_total") == 0

                single = f"/v1/entities/{o1}/events"
                assert (await client.post(single, json=event("e1", T0))).status_code == 200
                assert (await client.post(single, json=event("e1", T0))).json()["duplicate"]
                assert (await client.post(single, json=event("e0", T0 - 60))).status_code == 409
                bad_value = event("e2", T0 + 60, hr=float("1e39"))
                assert (await client.post(single, json=bad_value)).status_code == 422  # engine
                assert (await client.post(single, json={"event_id": "e3"})).status_code == 422
                bulk = [
                    {"entity_id": o2, **event("a", T0)},
                    {"entity_id": o2, **event("b", T0 + 60)},
                    {"entity_id": o2, "event_id": "c"},  # does not validate
                    {"entity_id": o1, **event("e1", T0)},  # duplicate
                ]
                assert (await client.post("/v1/events", json=bulk)).status_code == 200
                own_redis.stop()
                down = await client.post(single, json=event("e4", T0 + 120))
                assert down.status_code == 503
                down = await client.post("/v1/events", json=bulk[:2])
                assert down.status_code == 503

                text = (await client.get("/metrics")).text
                counted = {o: value(text, "riskstream_events_total", outcome=o) for o in OUTCOMES}
                assert counted == {
                    "scored": 3,
                    "duplicate": 2,
                    "late": 1,
                    "invalid": 3,
                    "unavailable": 3,
                }
    finally:
        own_redis.stop()


# -- /metrics: the series, valid exposition, one process ---------------------------------


async def test_metrics_have_the_series_with_their_types_and_labels(
    service: Running, tiny_model_dir: Path, key_prefix: str
) -> None:
    client, single = service.client, f"/v1/entities/{key_prefix}-m1/events"
    for k in range(3):
        assert (await client.post(single, json=event(f"e{k}", T0 + k))).is_success
    text = await wait_metric(client, "riskstream_sql_commit_lag_seconds_count", 3)
    promtool(text)
    found = families(text)
    types = {
        "riskstream_events": "counter",
        "riskstream_build_info": "gauge",
        "riskstream_sql_commit_lag_seconds": "histogram",
        "riskstream_state_bytes": "histogram",
        "riskstream_batch_size": "histogram",
        "riskstream_http_request_duration_seconds": "histogram",
        "riskstream_outbox_backlog": "gauge",
        "process_cpu_seconds": "counter",
        "process_resident_memory_bytes": "gauge",
    }
    for name, kind in types.items():
        assert found[name].type == kind, name
    batch_sizes = [
        n for n in found if n.startswith("riskstream_") and "batch" in n and "_created" not in n
    ]
    assert batch_sizes == ["riskstream_batch_size"]  # one batch-size metric
    [build] = found["riskstream_build_info"].samples
    manifest = json.loads((tiny_model_dir / "manifest.json").read_text())
    assert set(build.labels) == BUILD_LABELS and build.value == 1
    assert (build.labels["model"], build.labels["model_version"]) == (
        manifest["name"],
        manifest["version"],
    )
    # each score committed once: its state's size, and its lag to SQL, observed once
    assert value(text, "riskstream_state_bytes_count") == 3
    assert value(text, "riskstream_state_bytes_sum") > 3 * 64
    assert value(text, "riskstream_sql_commit_lag_seconds_count") == 3
    assert 0 <= value(text, "riskstream_sql_commit_lag_seconds_sum") < 3 * 60
    pids = {s.labels["pid"] for s in found["process_cpu_seconds"].samples}
    assert pids == {str(os.getpid())}  # in process: this one
    assert set(found) >= PROCESS_SERIES


async def wait_metric(
    client: httpx.AsyncClient, name: str, at_least: float, headers: dict[str, str] | None = None
) -> str:
    """Scrape until ``name`` (summed over its series) reaches ``at_least``; the last scrape."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        text = (await client.get("/metrics", headers=headers)).text
        if value(text, name) >= at_least:
            return text
        assert asyncio.get_running_loop().time() < deadline, f"{name} < {at_least}: {text}"
        await asyncio.sleep(0.1)


# -- real server processes -------------------------------------------------------------------


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


@pytest.mark.slow
async def test_two_workers_one_exposition_with_each_worker_process(
    servers: list[ServerProcess], settings: Settings, tmp_path: Path, key_prefix: str
) -> None:
    server = ServerProcess(server_env(settings), tmp_path / "server.log", workers=2)
    servers.append(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        # both workers up: each shows its process series (a worker writes its metric files
        # as it starts), whichever of them answers the scrape
        text = await wait_until(client, lambda t: len(worker_pids(t)) == 2)
        workers = worker_pids(text)
        assert workers <= set(session_members(server.pid)) and server.pid not in workers

        async def post(i: int) -> None:
            r = await client.post(f"/v1/entities/{key_prefix}-w{i}/events", json=event("e1", T0))
            assert r.status_code == 200, r.text

        await asyncio.gather(*(post(i) for i in range(40)))
        w0 = f"{key_prefix}-w0"
        bulk = [{"entity_id": w0, **event("e1", T0)}, {"entity_id": w0, "event_id": "x"}]
        assert (await client.post("/v1/events", json=bulk)).status_code == 200

        text = await wait_until(
            client, lambda t: value(t, "riskstream_sql_commit_lag_seconds_count") >= 40
        )
        promtool(text)
        found = families(text)
        # the workers' values summed into one series each
        assert value(text, "riskstream_events_total", outcome="scored") == 40
        assert value(text, "riskstream_events_total", outcome="duplicate") == 1
        assert value(text, "riskstream_events_total", outcome="invalid") == 1
        assert len(found["riskstream_events"].samples) == len(OUTCOMES)
        assert value(text, "riskstream_state_bytes_count") == 40
        assert value(text, "riskstream_sql_commit_lag_seconds_count") == 40
        [build] = found["riskstream_build_info"].samples
        assert set(build.labels) == BUILD_LABELS
        for name in PROCESS_SERIES:
            assert {s.labels["pid"] for s in found[name].samples} == {str(p) for p in workers}
        # a later scrape (maybe of the other worker) tells the same processes, CPU time grown
        again = (await client.get("/metrics")).text
        assert worker_pids(again) == workers
        assert value(again, "process_cpu_seconds_total") >= value(text, "process_cpu_seconds_total")


def worker_pids(text: str) -> set[int]:
    return {int(s.labels["pid"]) for s in samples(text, "process_cpu_seconds_total")}


async def wait_until(client: httpx.AsyncClient, ready: Any, timeout: float = 60) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        text = (await client.get("/metrics")).text
        if ready(text):
            return text
        assert asyncio.get_running_loop().time() < deadline, text
        await asyncio.sleep(0.2)


# -- the log ------------------------------------------------------------------------------


async def plant_unreadable(redis_url: str, prefix: str, output: str, count: int) -> None:
    """Entities on the watchlist whose state record is broken: a watchlist read logs a warning
    for each one it skips, so that request has several log lines of its own."""
    client = aioredis.Redis.from_url(redis_url)
    keys = ViewKeys(prefix)
    try:
        for i in range(count):
            await client.hset(
                keys.state(f"broken-{i}"), mapping={"step": 1, "t": T0, "latest": b"{"}
            )
            await client.zadd(keys.watchlist(output), {f"broken-{i}": 0.99})
    finally:
        await client.aclose()


async def drive(server: ServerProcess, output: str, entity: str) -> dict[str, str]:
    """Three requests with log lines of their own; their request ids by what they did."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        posted = await client.post(
            f"/v1/entities/{entity}/events",
            json={"event_id": "e1", "time": T0, "values": {"HR": float(VALUE_TEXT)}},
            headers={"X-Request-ID": "rid-post-1"},
        )
        assert posted.status_code == 200 and posted.headers["x-request-id"] == "rid-post-1"
        watch = await client.get(
            "/v1/watchlist", params={"output": output}, headers={"X-Request-ID": "rid-watch-1"}
        )
        assert watch.status_code == 200 and watch.headers["x-request-id"] == "rid-watch-1"
        made = await client.get("/v1/watchlist", params={"output": output, "limit": 5})
        assert made.status_code == 200
    return {"post": "rid-post-1", "watch": "rid-watch-1", "made": made.headers["x-request-id"]}


@pytest.mark.slow
async def test_json_log_lines_carry_the_request_id_of_their_request(
    servers: list[ServerProcess], settings: Settings, tmp_path: Path
) -> None:
    output = await start_and_plant(servers, settings, tmp_path, "json")
    server = servers[0]
    ids = await drive(server, output, f"{settings.key_prefix}-l1")
    server.stop()  # every line written
    text = server.log_path.read_text()
    assert VALUE_TEXT not in text
    lines = [orjson.loads(line) for line in text.splitlines()]  # each line one JSON object
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert {"uvicorn.error", "uvicorn.access"} <= {line["logger"] for line in lines}

    by_id: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_id.setdefault(line.get("request_id", ""), []).append(line)
    for what, request_id in ids.items():
        mine = by_id[request_id]
        assert [line for line in mine if line["logger"] == "uvicorn.access"], what
    # the watchlist reads: an access line and a warning per broken record, all with the id
    skipped = [line for line in lines if "skipped an unreadable" in line["message"]]
    assert len(skipped) == 4
    assert {line["request_id"] for line in skipped} == {ids["watch"], ids["made"]}
    watch = by_id[ids["watch"]]
    assert len(watch) == 3 and {line["level"] for line in watch} == {"INFO", "WARNING"}
    [access] = [line for line in watch if line["logger"] == "uvicorn.access"]
    assert access["method"] == "GET" and access["status"] == 200
    assert access["path"].startswith("/v1/watchlist?")
    [posted] = by_id[ids["post"]]
    assert posted["path"] == f"/v1/entities/{settings.key_prefix}-l1/events"
    assert posted["status"] == 200
    # lines of no request carry none
    assert any(line["message"].startswith("Started server process") for line in by_id[""])


TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"(?P<logger>[\w.]+) \[(?P<request_id>[^\]\s]+)\] (?P<message>.*)$"
)


@pytest.mark.slow
async def test_text_log_is_one_format_with_the_request_id(
    servers: list[ServerProcess], settings: Settings, tmp_path: Path
) -> None:
    output = await start_and_plant(servers, settings, tmp_path, "text")
    server = servers[0]
    ids = await drive(server, output, f"{settings.key_prefix}-l1")
    server.stop()
    text = server.log_path.read_text()
    assert VALUE_TEXT not in text
    parsed = [TEXT_LINE.match(line) for line in text.splitlines()]
    assert all(parsed), [line for line, m in zip(text.splitlines(), parsed) if m is None]
    lines = [m for m in parsed if m is not None]
    assert {"uvicorn.error", "uvicorn.access"} <= {m["logger"] for m in lines}
    skipped = [m for m in lines if "skipped an unreadable" in m["message"]]
    assert {m["request_id"] for m in skipped} == {ids["watch"], ids["made"]}
    for request_id in ids.values():
        assert [
            m for m in lines if m["request_id"] == request_id and m["logger"] == "uvicorn.access"
        ]
    assert any(m["request_id"] == "-" for m in lines)  # start-up: no request


async def start_and_plant(
    servers: list[ServerProcess], settings: Settings, tmp_path: Path, log_format: str
) -> str:
    output = json.loads((settings.model_dir / "manifest.json").read_text())["outputs"][0]["name"]
    assert settings.redis_url is not None
    await plant_unreadable(settings.redis_url, settings.key_prefix, output, 2)
    server = ServerProcess(
        server_env(settings, LOG_FORMAT=log_format),
        tmp_path / "server.log",
        serve_args=["--log-level", "info", "--access-log"],
    )
    servers.append(server)
    return str(output)
