"""Escalation requests (`terrain.escalations.v1`): a human to page or a field visit to make."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from terrain.contracts.base import MAX_COUNT, AwareDatetime, Envelope
from terrain.contracts.incidents import Evidence, IncidentLevel, RecommendedAction


class EscalationTarget(StrEnum):
    human = "human"
    field = "field"


class EscalationMessage(Envelope):
    escalation_id: str
    incident_id: str
    community_id: str
    thread_id: str
    target: EscalationTarget
    level: IncidentLevel
    reason: str
    place: str | None = None
    ack_deadline: AwareDatetime | None = None
    evidence: list[Evidence] = Field(default_factory=list)
    trigger: str | None = Field(
        default=None,
        description="What set it off: cascade, spike, ack_timeout, persisted, grew_after_ack, place, policy_end.",
    )
    step: int | None = Field(
        default=None, ge=1, le=MAX_COUNT, description="The escalation policy step (1 = first) a human page belongs to."
    )
    recipients: list[str] = Field(
        default_factory=list, description="Names of the people and channels notified (never addresses)."
    )
    actions: list[RecommendedAction] = Field(default_factory=list, description="What to do, as data.")
    language: str | None = Field(default=None, description="Language of `reason`.")
