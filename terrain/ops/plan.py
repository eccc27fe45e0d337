"""What a cluster runs, derived from the topic registry and the service table: topics, consumer groups, ports."""

from __future__ import annotations

from dataclasses import dataclass

from terrain.stack import SERVICES, ServiceDef
from terrain.topics import (
    ALL_TOPICS,
    COMMENTS,
    COMMENTS_INBOUND,
    COMMENTS_SCORED,
    ESCALATIONS,
    EVENTS_OUTCOMES,
    INCIDENTS,
    TopicSpec,
    dlq_name,
)

DAY_MS = 86_400_000

# Partitions per topic on a cluster. It bounds how many replicas of one consumer group do useful work,
# so every autoscaler's maximum is checked against it. Local runs use TERRAIN_TOPIC_PARTITIONS (4).
CLUSTER_PARTITIONS = 12
CLUSTER_REPLICAS = 3

# How long each topic keeps messages. The stream topics only need to outlive an outage of their
# consumers; the lifecycle topics are read by other systems, who get a month to catch up. A dead-letter
# twin keeps its messages a month, whatever the origin keeps: operators need time to look at them.
RETENTION_DAYS: dict[str, int] = {
    COMMENTS_INBOUND.name: 7,
    COMMENTS.name: 7,
    COMMENTS_SCORED.name: 14,
    INCIDENTS.name: 30,
    ESCALATIONS.name: 30,
    EVENTS_OUTCOMES.name: 30,
}
DLQ_RETENTION_DAYS = 30


@dataclass(frozen=True)
class TopicPlan:
    name: str
    partitions: int
    retention_ms: int
    origin: TopicSpec
    dead_letter: bool

    def config(self, *, min_insync_replicas: int | None = None) -> dict[str, str]:
        """Kafka topic configuration (strings, as the admin API and Strimzi take them)."""
        out = {"retention.ms": str(self.retention_ms), "cleanup.policy": "delete"}
        if min_insync_replicas is not None:
            out["min.insync.replicas"] = str(min_insync_replicas)
        return out


def topic_plans(partitions: int) -> list[TopicPlan]:
    """Every topic of the registry and its dead-letter twin, with partitions and retention."""
    plans: list[TopicPlan] = []
    for spec in ALL_TOPICS:
        if spec.name not in RETENTION_DAYS:
            raise KeyError(f"no retention declared for topic {spec.name!r} in terrain/ops/plan.py")
        plans.append(TopicPlan(spec.name, partitions, RETENTION_DAYS[spec.name] * DAY_MS, spec, False))
    for spec in ALL_TOPICS:
        plans.append(TopicPlan(spec.dlq, partitions, DLQ_RETENTION_DAYS * DAY_MS, spec, True))
    return plans


@dataclass(frozen=True)
class ConsumerGroup:
    """One stream a service consumes: the topic and the group's suffix (`<prefix>-<service>[-<stream>]`)."""

    service: str
    topic: TopicSpec
    stream: str | None = None

    def group_id(self, prefix: str = "terrain") -> str:
        base = f"{prefix}-{self.service}"
        return f"{base}-{self.stream}" if self.stream else base


# Kept beside the services' own `rt.consumer(...)` calls by a test that builds every app and compares.
CONSUMER_GROUPS: tuple[ConsumerGroup, ...] = (
    ConsumerGroup("ingest", COMMENTS_INBOUND),
    ConsumerGroup("sentiment", COMMENTS),
    ConsumerGroup("escalation", COMMENTS_SCORED),
    ConsumerGroup("events", EVENTS_OUTCOMES),
    ConsumerGroup("events", ESCALATIONS, "escalations"),
    ConsumerGroup("events", COMMENTS_SCORED, "engagement"),
)


def services() -> tuple[ServiceDef, ...]:
    return SERVICES


def groups_of(service: str) -> list[ConsumerGroup]:
    return [g for g in CONSUMER_GROUPS if g.service == service]


@dataclass(frozen=True)
class KafkaAccess:
    """What one service does on Kafka, and so all its Kafka user may do: the topics it reads (its consumer
    groups' topics), the topics it writes (those the registry names it a producer of, and the dead-letter twins of
    what it reads) and its consumer groups."""

    service: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    groups: tuple[str, ...]


def kafka_access(service: str, prefix: str = "terrain") -> KafkaAccess:
    groups = groups_of(service)
    reads = tuple(dict.fromkeys(g.topic.name for g in groups))
    produced = [t.name for t in ALL_TOPICS if service in t.producers]
    return KafkaAccess(
        service=service,
        reads=reads,
        writes=tuple(dict.fromkeys([*produced, *(dlq_name(t) for t in reads)])),
        groups=tuple(dict.fromkeys(g.group_id(prefix) for g in groups)),
    )
