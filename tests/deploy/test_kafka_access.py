"""Kafka on the cluster: one Strimzi KafkaUser per service with exactly the ACLs its plan needs, the services logging
in with it over TLS, and the metrics port open to Prometheus alone."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from faststream.security import SASLScram512

import terrain.topics
from terrain.kafka import kafka_security
from terrain.ops.manifests import KAFKA_CA_DIR, KAFKA_CA_SECRET, KEDA_SASL, METRICS_PORT
from terrain.ops.plan import CONSUMER_GROUPS, kafka_access, topic_plans
from terrain.settings import TerrainSettings
from terrain.stack import SERVICES
from terrain.topics import ALL_TOPICS, all_topic_names, dlq_name
from tests.deploy.test_k8s import OVERLAYS, by_kind
from tests.tls_helpers import make_pki

Doc = dict[str, Any]


def grants(user: Doc) -> dict[tuple[str, str], set[str]]:
    """(resource type, name) → operations, from a KafkaUser's ACLs; a pattern other than literal fails."""
    out: dict[tuple[str, str], set[str]] = {}
    for acl in user["spec"]["authorization"]["acls"]:
        res = acl["resource"]
        assert res["patternType"] == "literal", acl  # a prefix would reach topics added later for others
        assert acl.get("type", "allow") == "allow" and acl["host"] == "*", acl
        key = (res["type"], res["name"])
        assert key not in out, f"two ACLs for {key}"
        out[key] = set(acl["operations"])
    return out


def expected_grants(service: str) -> dict[tuple[str, str], set[str]]:
    access = kafka_access(service)
    out: dict[tuple[str, str], set[str]] = {}
    for topic in access.reads:
        out.setdefault(("topic", topic), {"Describe"}).add("Read")
    for topic in access.writes:
        out.setdefault(("topic", topic), {"Describe"}).add("Write")
    for group in access.groups:
        out[("group", group)] = {"Read"}
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_user_may_do_exactly_what_the_plan_gives_it(built: dict[str, list[Doc]], overlay: str) -> None:
    users = by_kind(built[overlay], "KafkaUser")
    assert set(users) == {f"terrain-{s.name}" for s in SERVICES} | {"terrain-topics"}
    for svc in SERVICES:
        user = users[f"terrain-{svc.name}"]
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == "terrain"
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
        assert user["spec"]["authorization"]["type"] == "simple"
        assert grants(user) == expected_grants(svc.name), svc.name


def test_the_plan_gives_each_service_its_groups_topics_and_dead_letter_twins() -> None:
    """The plan the ACLs come from, against the registry: a service reads its consumer groups' topics, writes the
    topics the registry names it a producer of and the dead-letter twins of what it reads, and nothing else."""
    everyone = set(all_topic_names())
    for svc in SERVICES:
        access = kafka_access(svc.name)
        groups = [g for g in CONSUMER_GROUPS if g.service == svc.name]
        assert set(access.groups) == {g.group_id() for g in groups}
        assert set(access.reads) == {g.topic.name for g in groups}
        assert set(access.writes) == ({t.name for t in ALL_TOPICS if svc.name in t.producers}
                                      | {dlq_name(g.topic.name) for g in groups})
        assert set(access.reads) | set(access.writes) <= everyone
    assert kafka_access("sentiment").writes == ("terrain.comments.scored.v1", "terrain.comments.v1.dlq")
    assert kafka_access("events").writes == tuple(dlq_name(t) for t in kafka_access("events").reads)


def test_every_topic_a_service_publishes_to_is_in_its_plan(root: Path) -> None:
    """The services publish through `rt.topic(<registry topic>)`: each one named in a service's code is one its
    Kafka user may write (else that publish would be refused by the broker on the cluster alone)."""
    pattern = re.compile(r"\.topic\(\s*([A-Z_]+)(\.dlq)?\s*\)")
    for svc in SERVICES:
        named: set[str] = set()
        for path in (root / svc.module.replace(".", "/")).rglob("*.py"):
            for constant, dlq in pattern.findall(path.read_text(encoding="utf-8")):
                spec = getattr(terrain.topics, constant)
                named.add(spec.dlq if dlq else spec.name)
        # The scan finds the publishes of every producer (events only dead-letters, through the kernel).
        assert bool(named) == any(svc.name in t.producers for t in ALL_TOPICS), svc.name
        assert named <= set(kafka_access(svc.name).writes), svc.name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_topics_job_may_create_the_planned_topics_and_nothing_else(
    built: dict[str, list[Doc]], overlay: str
) -> None:
    user = by_kind(built[overlay], "KafkaUser")["terrain-topics"]
    assert grants(user) == {("topic", p.name): {"Create", "Describe"} for p in topic_plans(12)}
    jobs = by_kind(built[overlay], "Job")
    topics = jobs["terrain-topics"]["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in topics["env"]}["TERRAIN_KAFKA_SASL_USERNAME"] == "terrain-topics"
    migrate = jobs["terrain-migrate"]["spec"]["template"]["spec"]["containers"][0]
    assert "env" not in migrate  # the database only: no Kafka login where none is needed


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_log_in_as_their_user_over_tls(
    built: dict[str, list[Doc]], overlay: str, tmp_path: Path
) -> None:
    docs = built[overlay]
    config = by_kind(docs, "ConfigMap")["terrain-config"]["data"]
    users = by_kind(docs, "KafkaUser")
    autoscalers, auths = by_kind(docs, "ScaledObject"), by_kind(docs, "TriggerAuthentication")
    assert config["TERRAIN_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["TERRAIN_KAFKA_SSL_CA_FILE"] == f"{KAFKA_CA_DIR}/ca.crt"
    ca = make_pki(tmp_path).ca
    for name, dep in by_kind(docs, "Deployment").items():
        pod = dep["spec"]["template"]["spec"]
        main = pod["containers"][0]
        env = {e["name"]: e for e in main["env"]}
        user = env["TERRAIN_KAFKA_SASL_USERNAME"]["value"]
        assert user == name and user in users
        # The password is the one Strimzi's User Operator writes into the Secret named after the KafkaUser.
        assert env["TERRAIN_KAFKA_SASL_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": user, "key": "password"}}
        volumes = {v["name"]: v for v in pod["volumes"]}
        mount = next(m for m in main["volumeMounts"] if m["mountPath"] == KAFKA_CA_DIR)
        assert volumes[mount["name"]]["secret"] == {"secretName": KAFKA_CA_SECRET,
                                                   "items": [{"key": "ca.crt", "path": "ca.crt"}]}
        # What the kernel makes of this pod's settings (the CA file stands in for the mounted one).
        settings = TerrainSettings.model_validate({
            **{k.removeprefix("TERRAIN_").lower(): v for k, v in config.items() if k.startswith("TERRAIN_")},
            "kafka_sasl_username": user, "kafka_sasl_password": "from-the-secret", "kafka_ssl_ca_file": ca,
        })
        security = kafka_security(settings)
        assert isinstance(security, SASLScram512) and security.use_ssl and security.username == user
        # KEDA reads the groups' lag as the same user, over the same listener.
        triggers = autoscalers[name]["spec"]["triggers"]
        assert {t["metadata"]["sasl"] for t in triggers} == {KEDA_SASL[config["TERRAIN_KAFKA_SASL_MECHANISM"]]}
        assert {t["metadata"]["tls"] for t in triggers} == {"enable"}
        (ref,) = {t["authenticationRef"]["name"] for t in triggers}
        spec = auths[ref]["spec"]
        assert {(r["parameter"], r["name"], r["key"]) for r in spec["secretTargetRef"]} == {
            ("password", user, "password"), ("ca", KAFKA_CA_SECRET, "ca.crt")}
        (from_env,) = spec["env"]
        assert from_env["parameter"] == "username" and from_env["name"] in env
        assert from_env["containerName"] == main["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_comes_in_on_the_metrics_port_only(built: dict[str, list[Doc]], overlay: str) -> None:
    docs = built[overlay]
    policies = by_kind(docs, "NetworkPolicy")
    metrics = policies["terrain-metrics-from-prometheus"]["spec"]
    (rule,) = metrics["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": "metrics"}]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    selected = set(metrics["podSelector"]["matchExpressions"][0]["values"])
    assert selected == {s.name for s in SERVICES}
    # No other way in reaches the metrics port, and the API ports are reached as before.
    for name, policy in policies.items():
        for r in policy["spec"].get("ingress", []):
            ports = {p["port"] for p in r.get("ports", [])}
            if name != "terrain-metrics-from-prometheus":
                assert ports == {"http"}, name
    for dep in by_kind(docs, "Deployment").values():
        ports = {p["name"]: p["containerPort"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert ports["metrics"] == METRICS_PORT and ports["http"] != METRICS_PORT


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_may_fetch_the_oidc_keys_and_read_their_access_settings(
    built: dict[str, list[Doc]], overlay: str
) -> None:
    docs = built[overlay]
    oidc = by_kind(docs, "NetworkPolicy")["terrain-egress-oidc"]["spec"]
    assert oidc["policyTypes"] == ["Egress"]
    assert {p["port"] for rule in oidc["egress"] for p in rule["ports"]} == {443, 8443}
    assert set(oidc["podSelector"]["matchExpressions"][0]["values"]) == {s.name for s in SERVICES}
    config = by_kind(docs, "ConfigMap")["terrain-config"]["data"]
    assert {"TERRAIN_OIDC_ISSUER", "TERRAIN_OIDC_AUDIENCE", "TERRAIN_OIDC_ROLE_GROUPS",
            "TERRAIN_OIDC_SCOPE_GROUPS"} <= set(config)
    assert config["TERRAIN_OIDC_AUDIENCE"] == "terrain"
    for dep in by_kind(docs, "Deployment").values():
        refs = dep["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        # TERRAIN_API_TOKEN comes from the Secret, the OIDC settings from the ConfigMap.
        assert refs == [{"configMapRef": {"name": "terrain-config"}}, {"secretRef": {"name": "terrain-secrets"}}]

