"""The Grafana dashboard and the Prometheus alert rules ask only for series a live server exposes:
every metric their PromQL names is in a real server's /metrics, and every label value they
select on occurs there once traffic has flowed (so no panel stays empty for a typo)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from riskstream.settings import Settings

from tests.support.paths import PROJECT_ROOT
from tests.support.server import ServerProcess
from tests.support.service import server_env

pytestmark = pytest.mark.slow
DASHBOARD = PROJECT_ROOT / "docker" / "grafana" / "dashboards" / "riskstream.json"
ALERTS = PROJECT_ROOT / "docker" / "prometheus" / "alerts.yml"
# Series Prometheus makes itself, not the service.
PROMETHEUS_OWN = {"up", "ALERTS"}
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "bool", "offset"}
KEYWORDS |= {"group_left", "group_right", "inf", "nan"}


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert panels
    queries = [t["expr"] for p in panels for t in p["targets"]]
    assert all(queries)
    return queries


def alert_queries() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def metric_names(query: str) -> set[str]:
    """The series names a PromQL expression reads (functions, keywords, labels left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', query)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group() in KEYWORDS:
            continue  # a function or an operator
        names.add(match.group())
    return names


def selectors(query: str) -> Iterator[tuple[str, str, str, str]]:
    """(metric, label, operator, value) of each label matcher with a literal value."""
    text = re.sub(r"\[[^\]]*\]", " ", query)
    for metric, body in re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}", text):
        for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', body):
            if "$" not in value:
                yield metric, label, op, value


def test_the_parser_of_these_tests() -> None:
    query = (
        "histogram_quantile(0.99, sum by (le, op) (rate(riskstream_redis_seconds_bucket"
        '{op=~"a|b"}[$__rate_interval]))) / on (instance) up{job="riskstream"} or vector(0)'
    )
    assert metric_names(query) == {"riskstream_redis_seconds_bucket", "up"}
    assert list(selectors(query)) == [
        ("riskstream_redis_seconds_bucket", "op", "=~", "a|b"),
        ("up", "job", "=", "riskstream"),
    ]


@pytest.fixture
def scraped(settings: Settings, tmp_path: Path) -> dict[str, list[dict[str, str]]]:
    """A real server's /metrics after the traffic a dashboard shows: single and bulk events,
    a duplicate, a late event (409), reads. Sample name -> the label sets it has."""
    server = ServerProcess(server_env(settings), tmp_path / "server.log")
    try:
        url = server.url
        base = {"time": "2026-11-25T08:00:00Z", "values": {}}
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.post("/v1/entities/d1/events", json={**base, "event_id": "e1"}).is_success
            again = client.post("/v1/entities/d1/events", json={**base, "event_id": "e1"})
            assert again.json()["duplicate"] is True
            late = {"event_id": "e0", "time": "2026-11-25T07:00:00Z", "values": {}}
            assert client.post("/v1/entities/d1/events", json=late).status_code == 409
            bulk = [{**base, "entity_id": f"d{i}", "event_id": "b"} for i in range(2, 6)]
            assert client.post("/v1/events", json=bulk).is_success
            assert client.get("/v1/entities/d1/risk").is_success
            assert client.get("/v1/entities/d1/scores").status_code in (200, 503)
            text = client.get("/metrics").text
    finally:
        server.stop()
    found: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(dict(sample.labels))
        if family.type == "histogram":  # no sample yet: still a series the server exposes
            for suffix in ("_bucket", "_count", "_sum"):
                found.setdefault(family.name + suffix, [])
        elif family.type == "counter":
            found.setdefault(family.name + "_total", [])
        else:
            found.setdefault(family.name, [])
    return found


def test_every_series_of_the_dashboard_and_the_alerts_is_exposed(
    scraped: dict[str, list[dict[str, str]]],
) -> None:
    queries = dashboard_queries() + alert_queries()
    named = set().union(*(metric_names(q) for q in queries))
    assert {"riskstream_outbox_backlog", "riskstream_dead_letters_waiting"} <= named
    assert "riskstream_http_request_duration_seconds_bucket" in named
    missing = sorted(n for n in named - PROMETHEUS_OWN if n not in scraped)
    assert not missing, f"not in a live /metrics: {missing}"


def test_every_label_value_selected_occurs_in_the_live_series(
    scraped: dict[str, list[dict[str, str]]],
) -> None:
    checked = 0
    for query in dashboard_queries() + alert_queries():
        for metric, label, op, value in selectors(query):
            if metric in PROMETHEUS_OWN:
                continue
            values = [labels.get(label) for labels in scraped[metric]]
            assert any(v is not None for v in values), f"{metric} has no label {label}"
            if op == "=":
                assert value in values, (metric, label, value, values)
            elif op == "=~" and label != "status":  # 5xx: none in this traffic, by design
                pattern = re.compile(value)
                assert any(v and pattern.fullmatch(v) for v in values), (metric, label, value)
            checked += 1
    assert checked >= 3
