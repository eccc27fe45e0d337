"""Every topic Terrain reads or writes, declared once: name, model, key, producers, consumers, dead-letter twin."""

from __future__ import annotations

from dataclasses import dataclass

from terrain.contracts import (
    CommentMessage,
    EscalationMessage,
    EventOutcomeMessage,
    InboundCommentMessage,
    IncidentMessage,
    ScoredCommentMessage,
)
from terrain.contracts.base import Envelope

DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    model: type[Envelope]
    key: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    description: str

    @property
    def dlq(self) -> str:
        return dlq_name(self.name)


def dlq_name(topic: str) -> str:
    """The dead-letter twin of a topic."""
    return topic + DLQ_SUFFIX


COMMENTS_INBOUND = TopicSpec(
    name="terrain.comments.inbound.v1",
    model=InboundCommentMessage,
    key="community_id",
    producers=("other systems",),
    consumers=("ingest",),
    description="Comments published by other systems; ingest validates, deduplicates and normalises them.",
)
COMMENTS = TopicSpec(
    name="terrain.comments.v1",
    model=CommentMessage,
    key="community_id",
    producers=("ingest",),
    consumers=("sentiment",),
    description="Normalised comments with stable ids, one message per new comment, edit or removal.",
)
COMMENTS_SCORED = TopicSpec(
    name="terrain.comments.scored.v1",
    model=ScoredCommentMessage,
    key="community_id",
    producers=("sentiment",),
    consumers=("escalation", "events"),
    description="Comments with sentiment (label, score, confidence, language, model) and charter flags.",
)
INCIDENTS = TopicSpec(
    name="terrain.incidents.v1",
    model=IncidentMessage,
    key="community_id",
    producers=("escalation",),
    consumers=("anyone",),
    description="Incident lifecycle: opened, updated, escalated, acknowledged, resolved.",
)
ESCALATIONS = TopicSpec(
    name="terrain.escalations.v1",
    model=EscalationMessage,
    key="community_id",
    producers=("escalation",),
    consumers=("notifiers", "events"),
    description="Requests to page a human or to send someone into the field.",
)
EVENTS_OUTCOMES = TopicSpec(
    name="terrain.events.outcomes.v1",
    model=EventOutcomeMessage,
    key="community_id",
    producers=("other systems", "field apps"),
    consumers=("events",),
    description="In-real-life events and field visits with their outcomes.",
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    COMMENTS_INBOUND,
    COMMENTS,
    COMMENTS_SCORED,
    INCIDENTS,
    ESCALATIONS,
    EVENTS_OUTCOMES,
)


def all_topic_names(*, with_dlq: bool = True) -> list[str]:
    names = [t.name for t in ALL_TOPICS]
    if with_dlq:
        names += [t.dlq for t in ALL_TOPICS]
    return names


def by_name(name: str) -> TopicSpec:
    for spec in ALL_TOPICS:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown topic {name!r}")
