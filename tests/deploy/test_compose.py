"""docker/compose.yaml as Compose itself renders it (``docker compose config``: the Compose
specification's validation, interpolation, defaults): the stack the issue asks for."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from tests.support.deploy import (
    COMPOSE_ENV,
    COMPOSE_FILE,
    DOCKER,
    compose_binary,
    rendered_compose,
    run,
)


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return rendered_compose()


def command_of(service: dict[str, Any]) -> list[str]:
    return list(service.get("command") or [])


def test_every_required_secret_must_be_set() -> None:
    """No default password: leaving one unset fails naming the variable."""
    for name in COMPOSE_ENV:
        env = {**os.environ, **COMPOSE_ENV}
        del env[name]
        done = run(compose_binary(), "-f", str(COMPOSE_FILE), "config", "-q", env=env)
        assert done.returncode != 0 and name in done.stderr, (name, done.stderr)


def test_replicas_behind_nginx_only(stack: dict[str, Any]) -> None:
    services = stack["services"]
    app = services["riskstream"]
    assert app["deploy"]["replicas"] == 2
    assert (
        rendered_compose(RISKSTREAM_REPLICAS="5")["services"]["riskstream"]["deploy"]["replicas"]
        == 5
    )
    assert not app.get("ports"), "replicas are reached through nginx only"
    nginx = services["nginx"]
    assert [(p["target"], p["published"]) for p in nginx["ports"]] == [(80, "8000")]
    assert (
        rendered_compose(RISKSTREAM_PORT="9443")["services"]["nginx"]["ports"][0]["published"]
        == "9443"
    )
    conf = DOCKER / "nginx" / "riskstream.conf"
    assert any(v["source"] == str(conf) for v in nginx["volumes"])
    text = conf.read_text()
    assert re.search(r"server riskstream:8000 resolve;", text)
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in text
    assert "X-Forwarded-Proto $scheme" in text


def test_uvicorn_trusts_forwarded_headers_from_nginx_alone(stack: dict[str, Any]) -> None:
    services = stack["services"]
    nginx_ip = services["nginx"]["networks"]["backend"]["ipv4_address"]
    assert services["riskstream"]["environment"]["FORWARDED_ALLOW_IPS"] == nginx_ip
    subnet = stack["networks"]["backend"]["ipam"]["config"][0]["subnet"]
    import ipaddress

    assert ipaddress.ip_address(nginx_ip) in ipaddress.ip_network(subnet)
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert '"--proxy-headers"' in dockerfile  # the image's command


def test_redis_appends_every_second_to_a_volume_and_never_evicts(stack: dict[str, Any]) -> None:
    redis = stack["services"]["redis"]
    command = command_of(redis)
    options = dict(zip(command[1::2], command[2::2]))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"
    assert {(v["type"], v["source"], v["target"]) for v in redis["volumes"]} == {
        ("volume", "redis-data", "/data")
    }


def test_postgres_keeps_its_data_and_the_service_uses_a_role_of_its_own(
    stack: dict[str, Any],
) -> None:
    services = stack["services"]
    pg = services["postgres"]
    mounts = {v["target"]: v for v in pg["volumes"]}
    assert mounts["/var/lib/postgresql/data"]["type"] == "volume"
    init = mounts["/docker-entrypoint-initdb.d/10-riskstream.sh"]
    assert init["source"] == str(DOCKER / "postgres" / "init-riskstream.sh")
    role_password = COMPOSE_ENV["RISKSTREAM_DB_PASSWORD"]
    assert pg["environment"]["RISKSTREAM_DB_PASSWORD"] == role_password
    for name in ("riskstream", "riskstream-keys"):
        url = services[name]["environment"]["DATABASE_URL"]
        assert url == f"postgresql://riskstream:{role_password}@postgres:5432/riskstream"


def test_healthchecks_and_startup_order(stack: dict[str, Any]) -> None:
    services = stack["services"]
    for name in ("redis", "postgres", "nginx", "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name
    # riskstream's own healthcheck is the image's HEALTHCHECK (/readyz): tests/deploy/test_image.py
    assert "healthcheck" not in services["riskstream"]

    def waits_for(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}

    assert waits_for("riskstream") == {"redis": "service_healthy", "postgres": "service_healthy"}
    assert waits_for("nginx") == {"riskstream": "service_healthy"}
    assert waits_for("riskstream-keys") == {"riskstream": "service_healthy"}
    assert waits_for("prometheus") == {"riskstream-keys": "service_completed_successfully"}
    assert waits_for("grafana") == {"prometheus": "service_healthy"}
    assert services["riskstream"]["environment"]["STARTUP_TIMEOUT_S"] == "120"


def test_restart_policies(stack: dict[str, Any]) -> None:
    services = stack["services"]
    for name, service in services.items():
        expected = "no" if name == "riskstream-keys" else "unless-stopped"  # a one-shot
        assert service["restart"] == expected, name


def test_prometheus_scrapes_the_replicas_with_the_key_the_one_shot_writes(
    stack: dict[str, Any],
) -> None:
    import yaml

    services = stack["services"]
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["dns_sd_configs"] == [
        {"names": ["riskstream"], "type": "A", "port": 8000, "refresh_interval": "15s"}
    ]
    key_file = job["authorization"]["credentials_file"]
    mount = next(
        v for v in services["prometheus"]["volumes"] if key_file.startswith(v["target"] + "/")
    )
    assert mount["source"] == "riskstream-data" and mount["read_only"]
    assert mount["volume"]["subpath"] == "prometheus"  # not the admin key beside it
    # the one-shot writes DATA_DIR/prometheus/<file> into the same volume
    keys = services["riskstream-keys"]
    assert {(v["source"], v["target"]) for v in keys["volumes"]} == {
        ("riskstream-data", "/var/lib/riskstream")
    }
    # (config prints a Compose file again: `$` escaped as `$$`)
    script = "\n".join(keys["command"]).replace("$$", "$")
    assert f'key="$DATA_DIR/prometheus/{key_file.rsplit("/", 1)[1]}"' in script
    assert "--scope read" in script
    alerts = services["prometheus"]["volumes"]
    assert any(v["target"] == "/etc/prometheus/alerts.yml" for v in alerts)
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]


def test_grafana_is_provisioned_with_the_dashboard(stack: dict[str, Any]) -> None:
    import yaml

    grafana = stack["services"]["grafana"]
    mounts = {v["target"]: v["source"] for v in grafana["volumes"]}
    provisioning = DOCKER / "grafana" / "provisioning"
    assert mounts["/etc/grafana/provisioning"] == str(provisioning)
    assert mounts["/etc/grafana/dashboards"] == str(DOCKER / "grafana" / "dashboards")
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "riskstream.yml").read_text())[
        "providers"
    ]
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090" and source["uid"] == "prometheus"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/etc/grafana/dashboards/riskstream.json"
    assert (DOCKER / "grafana" / "dashboards" / "riskstream.json").is_file()


def test_images_are_pinned_to_a_release(stack: dict[str, Any]) -> None:
    for name, service in stack["services"].items():
        image = service["image"]
        if name in ("riskstream", "riskstream-keys"):
            assert image == "riskstream:local"  # built here
            continue
        tag = image.rpartition(":")[2]
        # PostgreSQL numbers its releases major.minor (16.10); the others major.minor.patch
        release = r"\d+\.\d+" if name == "postgres" else r"v?\d+\.\d+\.\d+"
        assert re.fullmatch(release, tag), f"{name}: {image} is not a precise release"
