"""The Kubernetes overlays: valid for a current Kubernetes, custom resources valid, and what operators rely on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate.utils import latest_version, validate

from terrain.ops.manifests import KAFKA_PORT, METRICS_PORT, TERMINATION_GRACE_S
from terrain.ops.plan import CONSUMER_GROUPS
from terrain.stack import SERVICES
from terrain.topics import all_topic_names
from tests.deploy.crd_checks import MODELS, check_custom_resource

Doc = dict[str, Any]
CUSTOM_GROUPS = ("kafka.strimzi.io/", "keda.sh/", "monitoring.coreos.com/")
OVERLAYS = ("dev", "prod")


def by_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[Doc]) -> dict[str, Doc]:
    return {f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
            for d in docs if d["kind"] in ("Deployment", "Job")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_builtin_resource_passes_strict_validation(built: dict[str, list[Doc]], overlay: str) -> None:
    version = latest_version()
    checked: Counter[str] = Counter()
    for doc in built[overlay]:
        if doc["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        validate(doc, version, strict=True)  # raises ValidationError with the path
        checked[doc["kind"]] += 1
    assert checked == {"Deployment": 4, "Service": 4, "PodDisruptionBudget": 4, "Job": 2, "NetworkPolicy": 8,
                       "ServiceAccount": 1, "ConfigMap": 1, "Ingress": 1}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_conform_to_their_schemas(built: dict[str, list[Doc]], overlay: str) -> None:
    kinds = Counter(d["kind"] for d in built[overlay] if d["apiVersion"].startswith(CUSTOM_GROUPS))
    assert kinds == {"KafkaTopic": 2 * len(all_topic_names(with_dlq=False)), "ScaledObject": 4, "ServiceMonitor": 4,
                     "TriggerAuthentication": 4, "KafkaUser": 4 + 1}
    problems = {f"{d['kind']}/{d['metadata']['name']}": check_custom_resource(d)
                for d in built[overlay] if d["apiVersion"].startswith(CUSTOM_GROUPS)}
    assert {k: v for k, v in problems.items() if v} == {}


def test_the_custom_resource_check_catches_unknown_and_wrong_fields(built: dict[str, list[Doc]]) -> None:
    import copy

    so = copy.deepcopy(by_kind(built["prod"], "ScaledObject")["terrain-sentiment"])
    so["spec"]["maxReplicas"] = 3  # the HPA's spelling, not KEDA's
    assert check_custom_resource(so) == ["unknown field /spec/maxReplicas"]
    sm = copy.deepcopy(by_kind(built["prod"], "ServiceMonitor")["terrain-ingest"])
    sm["spec"]["endpoints"][0]["port"] = 8081  # must be the port's name
    assert check_custom_resource(sm)
    topic = copy.deepcopy(next(iter(by_kind(built["prod"], "KafkaTopic").values())))
    topic["spec"]["retention"] = "7d"
    assert check_custom_resource(topic)
    user = copy.deepcopy(by_kind(built["prod"], "KafkaUser")["terrain-ingest"])
    user["spec"]["authorization"]["acls"][0]["operation"] = "Read"  # the deprecated singular spelling
    assert check_custom_resource(user)
    user = copy.deepcopy(by_kind(built["prod"], "KafkaUser")["terrain-ingest"])
    user["spec"]["authentication"]["type"] = "scram-sha-256"  # Strimzi manages SCRAM-SHA-512 users only
    assert check_custom_resource(user)
    auth = copy.deepcopy(by_kind(built["prod"], "TriggerAuthentication")["terrain-ingest-kafka"])
    auth["spec"]["secretTargetRef"][0]["secret"] = auth["spec"]["secretTargetRef"][0].pop("name")
    assert check_custom_resource(auth)
    assert set(MODELS) == {("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication"),
                           ("monitoring.coreos.com/v1", "ServiceMonitor")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_topics_in_the_manifests_are_the_registry(built: dict[str, list[Doc]], overlay: str) -> None:
    docs = built[overlay]
    topics = [d["spec"]["topicName"] for d in by_kind(docs, "KafkaTopic").values()]
    assert sorted(topics) == sorted(all_topic_names())
    named = {t["metadata"]["topic"] for so in by_kind(docs, "ScaledObject").values() for t in so["spec"]["triggers"]}
    assert named <= set(all_topic_names(with_dlq=False))
    groups = {(t["metadata"]["consumerGroup"], t["metadata"]["topic"])
              for so in by_kind(docs, "ScaledObject").values() for t in so["spec"]["triggers"]}
    assert groups == {(g.group_id(), g.topic.name) for g in CONSUMER_GROUPS}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscalers_never_exceed_the_partitions_they_read(built: dict[str, list[Doc]], overlay: str) -> None:
    docs = built[overlay]
    partitions = {d["spec"]["topicName"]: d["spec"]["partitions"] for d in by_kind(docs, "KafkaTopic").values()}
    deployments = by_kind(docs, "Deployment")
    config = by_kind(docs, "ConfigMap")["terrain-config"]["data"]
    for name, so in by_kind(docs, "ScaledObject").items():
        spec = so["spec"]
        assert spec["scaleTargetRef"]["name"] in deployments
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        for trigger in spec["triggers"]:
            assert trigger["type"] == "kafka"
            assert spec["maxReplicaCount"] <= partitions[trigger["metadata"]["topic"]], name
            # The bootstrap servers come from the Deployment's ConfigMap, which must define them.
            assert trigger["metadata"]["bootstrapServersFromEnv"] in config


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_probes_resources_and_a_locked_down_pod(built: dict[str, list[Doc]], overlay: str) -> None:
    docs = built[overlay]
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {f"terrain-{s.name}" for s in SERVICES}
    for svc in SERVICES:
        pod = deployments[f"terrain-{svc.name}"]["spec"]["template"]["spec"]
        main = pod["containers"][0]
        assert main["args"] == ["serve", svc.name]
        assert main["ports"] == [{"name": "http", "containerPort": svc.default_port, "protocol": "TCP"},
                                 {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}]
        assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        # A consumer's graceful stop (FastStream: 15 s) and the preStop pause fit inside the grace period.
        assert pod["terminationGracePeriodSeconds"] == TERMINATION_GRACE_S > 15 + 5 + 10
        assert pod["initContainers"][0]["args"][:2] == ["migrate", "--check"]
    for name, pod in pod_specs(docs).items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"], name
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], name
            assert set(c["resources"]) == {"requests", "limits"}, name
            refs = [next(iter(e)) for e in c["envFrom"]]
            assert refs == ["configMapRef", "secretRef"], name
            if overlay == "prod":
                assert c["image"].startswith("registry.example.org/terrain/terrain:"), name
            assert ":" in c["image"] and not c["image"].endswith(":latest"), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_committed(built: dict[str, list[Doc]], overlay: str) -> None:
    docs = built[overlay]
    assert not by_kind(docs, "Secret")
    config = by_kind(docs, "ConfigMap")["terrain-config"]["data"]
    for key in config:
        assert not any(word in key for word in ("TOKEN", "SECRET", "PASSWORD", "DATABASE_URL")), key
    assert config["TERRAIN_MIGRATE_ON_START"] == "false" and config["TERRAIN_CREATE_TOPICS"] == "false"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_is_monitored_and_protected(built: dict[str, list[Doc]], overlay: str) -> None:
    docs = built[overlay]
    services, pdbs, monitors = by_kind(docs, "Service"), by_kind(docs, "PodDisruptionBudget"), by_kind(
        docs, "ServiceMonitor")
    for name, dep in by_kind(docs, "Deployment").items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert services[name]["spec"]["selector"].items() <= labels.items()
        assert pdbs[name]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert monitors[name]["spec"]["selector"]["matchLabels"].items() <= services[name]["metadata"]["labels"].items()
        # Prometheus scrapes the metrics port, which the service serves apart (TERRAIN_METRICS_PORT).
        assert monitors[name]["spec"]["endpoints"][0] | {"path": "/metrics", "port": "metrics"} == monitors[name][
            "spec"]["endpoints"][0]
        ports = {p["name"]: p for p in services[name]["spec"]["ports"]}
        assert ports["metrics"] == {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}
        env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["TERRAIN_METRICS_PORT"]["value"] == str(METRICS_PORT)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_through_only_kafka_postgres_ingress_and_prometheus(
    built: dict[str, list[Doc]], overlay: str
) -> None:
    policies = by_kind(built[overlay], "NetworkPolicy")
    deny = policies["terrain-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
    egress_ports = sorted(p["port"] for rule in policies["terrain-egress-kafka-postgres"]["spec"]["egress"]
                          for p in rule["ports"])
    assert egress_ports == [53, 53, 5432, KAFKA_PORT]
    ingest = policies["terrain-ingest-from-ingress"]["spec"]
    assert ingest["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "ingest"
    # Every policy that opens a way in names who may come.
    for name, p in policies.items():
        for rule in p["spec"].get("ingress", []):
            assert rule.get("from"), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingress_exposes_only_the_meta_webhook(built: dict[str, list[Doc]], overlay: str) -> None:
    (ingress,) = by_kind(built[overlay], "Ingress").values()
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert [(p["path"], p["backend"]["service"]["name"]) for p in paths] == [("/webhooks/meta", "terrain-ingest")]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_start_up_jobs_run_migrate_and_topics(built: dict[str, list[Doc]], overlay: str) -> None:
    jobs = by_kind(built[overlay], "Job")
    assert {n: j["spec"]["template"]["spec"]["containers"][0]["args"] for n, j in jobs.items()} == {
        "terrain-migrate": ["migrate"], "terrain-topics": ["topics"]}
    for job in jobs.values():
        assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_validate_command_passes_the_built_overlay(
    built: dict[str, list[Doc]], overlay: str, tmp_path: Path
) -> None:
    """The command operators would run, on the overlay as built: only the custom resources lack a schema there."""
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(yaml.safe_dump_all(built[overlay]))
    exe = shutil.which("kubernetes-validate") or str(Path(sys.executable).parent / "kubernetes-validate")
    result = subprocess.run([exe, "--strict", "--quiet", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in (result.stdout + result.stderr).splitlines():
        assert line.startswith("WARN") and "Couldn't find schema for kind" in line, line
        assert any(kind in line for kind in ("KafkaTopic", "KafkaUser", "ScaledObject", "TriggerAuthentication",
                                             "ServiceMonitor")), line
