"""docker-compose.yml: valid against the compose specification, and each part wired as the services expect."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from terrain.stack import SERVICES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_validates_against_the_compose_specification() -> None:
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    result = subprocess.run([exe, "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_service_runs_its_command_on_its_port_with_a_readiness_check(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for svc in SERVICES:
        spec = services[svc.name]
        assert spec["command"] == ["serve", svc.name]
        assert spec["ports"] == [f"127.0.0.1:{svc.default_port}:{svc.default_port}"]
        test = " ".join(spec["healthcheck"]["test"])
        assert f"http://127.0.0.1:{svc.default_port}/readyz" in test
        assert spec["restart"] == "unless-stopped"
        assert spec["build"]["dockerfile"] == "deploy/Dockerfile"
        assert spec["read_only"] is True and spec["cap_drop"] == ["ALL"]
        # Schema and topics come from the jobs, which must have finished first.
        assert spec["depends_on"] == {"migrate": {"condition": "service_completed_successfully"},
                                      "topics": {"condition": "service_completed_successfully"}}
        env = spec["environment"]
        assert env["TERRAIN_MIGRATE_ON_START"] == "false" and env["TERRAIN_CREATE_TOPICS"] == "false"
        assert env["TERRAIN_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert "@postgres:5432/" in env["TERRAIN_DATABASE_URL"]


def test_jobs_and_infrastructure(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["command"] == ["migrate"] and services["topics"]["command"] == ["topics"]
    for job in ("migrate", "topics"):
        assert services[job]["restart"] == "on-failure"
        assert set(services[job]["depends_on"]) == {"kafka", "postgres"}
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    # Kafka is plaintext here, which is fine only while it stays on the project's private network.
    assert "ports" not in kafka and "network_mode" not in kafka
    assert set(kafka["environment"]["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].replace(",", ":").split(":")[1::2]) == {
        "PLAINTEXT"}
    for name, spec in services.items():
        image = spec["image"]
        assert ":" in image and not image.endswith(":latest"), name
        if name not in ("migrate", "topics"):
            assert "healthcheck" in spec, name


def test_configuration_is_environment_only_and_no_secret_is_written_down(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for spec in compose["services"].values():
        assert "env_file" not in spec
        for key, value in (spec.get("environment") or {}).items():
            if re.search(r"TOKEN|SECRET|PASSWORD", key):
                assert str(value).startswith("${"), key
    # Secrets are demanded from the environment (`:?`), never given a default in the file.
    for var in ("TERRAIN_API_TOKEN", "TERRAIN_POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "GRAFANA_DB_PASSWORD"):
        assert re.search(r"\$\{" + var + r":\?", text), var


def test_prometheus_scrapes_every_service(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{s.name}:{s.default_port}" for s in SERVICES}
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in config["scrape_configs"])


def test_grafana_is_provisioned_with_both_data_sources_and_the_dashboards(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    sources = yaml.safe_load((provisioning / "datasources/terrain.yaml").read_text())["datasources"]
    assert {s["type"] for s in sources} == {"prometheus", "grafana-postgresql-datasource"}
    assert next(s for s in sources if s["type"] == "prometheus")["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards/terrain.yaml").read_text())["providers"][0]
    dashboards = ROOT / mounts[provider["options"]["path"]]
    assert sorted(p.name for p in dashboards.glob("*.json")) == [
        "communities.json", "events.json", "incidents.json", "pipeline.json"]
    init = compose["services"]["postgres"]["volumes"][1].split(":")[0]
    assert "grafana_reader" in (ROOT / init).read_text()
