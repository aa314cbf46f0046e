"""docker/prometheus/ checked by promtool: the configuration parses, the alert rules parse, and
each rule fires (or not) as docker/prometheus/alerts_test.yml expects on synthetic series.
That every metric they name exists: tests/integration/test_dashboard_metrics.py."""

from __future__ import annotations

import yaml

from tests.support.deploy import DOCKER, promtool, run

PROMETHEUS = DOCKER / "prometheus"


def test_the_configuration_parses() -> None:
    # --syntax-only: the scrape key file exists only inside the compose stack
    done = run(promtool(), "check", "config", "--syntax-only", str(PROMETHEUS / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_alert_rules_parse() -> None:
    done = run(promtool(), "check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout


def test_each_alert_fires_when_it_should() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    cases = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    tested = {c["alertname"] for case in cases for c in case["alert_rule_test"] if c["exp_alerts"]}
    assert tested == {rule["alert"] for rule in rules}  # every rule seen firing
    done = run(promtool(), "test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
