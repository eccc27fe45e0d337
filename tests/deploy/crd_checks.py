"""Checks for the custom resources (KEDA, Prometheus operator, Strimzi) that kubernetes-validate has no schema for.

KEDA's ScaledObject and TriggerAuthentication and the ServiceMonitor are validated by the typed models generated
from their published CRD schemas (cloudcoil-models-*), strictly: a field the model does not know is reported, not
dropped. No such package exists for Strimzi, so KafkaTopic and KafkaUser are checked against schemas written here
from Strimzi's reference (kafka.strimzi.io/v1beta2 KafkaTopic: spec.topicName, partitions, replicas, config;
KafkaUser: spec.authentication.type, spec.authorization with simple ACLs: resource type, name and pattern type,
operations, host).
"""

from __future__ import annotations

from typing import Any

import jsonschema
from cloudcoil.models.keda import v1alpha1 as keda
from cloudcoil.models.prometheus_operator import v1 as monitoring
from pydantic import BaseModel, ValidationError

MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
}

KAFKA_TOPIC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "kafka.strimzi.io/v1beta2"},
        "kind": {"const": "KafkaTopic"},
        "metadata": {
            "type": "object",
            "required": ["name", "labels"],
            "properties": {
                # A Kubernetes resource name (DNS subdomain); the Kafka name goes in spec.topicName.
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
                "labels": {
                    "type": "object",
                    "required": ["strimzi.io/cluster"],
                    "additionalProperties": {"type": "string"},
                },
                "namespace": {"type": "string"},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["partitions", "replicas"],
            "properties": {
                "topicName": {"type": "string", "pattern": r"^[a-zA-Z0-9._-]{1,249}$"},
                "partitions": {"type": "integer", "minimum": 1},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
                "config": {
                    "type": "object",
                    "additionalProperties": {"type": ["string", "number", "boolean"]},
                },
            },
        },
    },
}


_METADATA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "labels"],
    "properties": {
        # A Kubernetes resource name (DNS subdomain).
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
        "labels": {
            "type": "object",
            "required": ["strimzi.io/cluster"],
            "additionalProperties": {"type": "string"},
        },
        "namespace": {"type": "string"},
    },
}

KAFKA_USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "kafka.strimzi.io/v1beta2"},
        "kind": {"const": "KafkaUser"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "authentication": {
                    "type": "object",
                    "required": ["type"],
                    "additionalProperties": False,
                    "properties": {"type": {"enum": ["tls", "tls-external", "scram-sha-512"]}},
                },
                "authorization": {
                    "type": "object",
                    "required": ["type", "acls"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"const": "simple"},
                        "acls": {"type": "array", "items": {
                            "type": "object",
                            "required": ["resource", "operations"],
                            "additionalProperties": False,
                            "properties": {
                                "resource": {
                                    "type": "object",
                                    "required": ["type"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "type": {"enum": ["topic", "group", "cluster", "transactionalId"]},
                                        "name": {"type": "string", "minLength": 1},
                                        "patternType": {"enum": ["literal", "prefix"]},
                                    },
                                },
                                "operations": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {
                                    "enum": ["Read", "Write", "Create", "Delete", "Alter", "Describe",
                                             "ClusterAction", "AlterConfigs", "DescribeConfigs",
                                             "IdempotentWrite", "All"]}},
                                "host": {"type": "string"},
                                "type": {"enum": ["allow", "deny"]},
                            },
                        }},
                    },
                },
                "quotas": {"type": "object"},
            },
        },
    },
}

SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): KAFKA_TOPIC_SCHEMA,
    ("kafka.strimzi.io/v1beta2", "KafkaUser"): KAFKA_USER_SCHEMA,
}


def _unknown(src: Any, dumped: Any, path: str = "") -> list[str]:
    """Paths present in the manifest but absent once the model has read it: fields the schema does not have."""
    out: list[str] = []
    if isinstance(src, dict):
        for key, value in src.items():
            if not isinstance(dumped, dict) or key not in dumped:
                out.append(f"{path}/{key}")
            else:
                out += _unknown(value, dumped[key], f"{path}/{key}")
    elif isinstance(src, list):
        if not isinstance(dumped, list) or len(dumped) != len(src):
            return [path]
        for i, (a, b) in enumerate(zip(src, dumped, strict=True)):
            out += _unknown(a, b, f"{path}/{i}")
    return out


def check_custom_resource(doc: dict[str, Any]) -> list[str]:
    """Problems with one custom resource; an empty list when it conforms."""
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    if key in SCHEMAS:
        validator = jsonschema.Draft202012Validator(SCHEMAS[key])
        return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]
    model = MODELS.get(key)
    if model is None:
        return [f"no schema known for {key}"]
    try:
        parsed = model.model_validate(doc)
    except ValidationError as exc:
        return [str(exc)]
    dumped = parsed.model_dump(by_alias=True, exclude_none=True, mode="json")
    return [f"unknown field {p}" for p in _unknown(doc, dumped)]
