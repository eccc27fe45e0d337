"""Escalation requests (`terrain.escalations.v1`): a human to page or a field visit to make."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from terrain.contracts.base import AwareDatetime, Envelope
from terrain.contracts.incidents import Evidence, IncidentLevel


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
