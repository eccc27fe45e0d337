"""Incident lifecycle contract (`terrain.incidents.v1`)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from terrain.contracts.base import AwareDatetime, Contract, Envelope


class IncidentLevel(StrEnum):
    respond = "respond"
    moderate = "moderate"
    human = "human"
    field = "field"


class IncidentState(StrEnum):
    open = "open"
    acknowledged = "acknowledged"
    resolved = "resolved"


class IncidentEventType(StrEnum):
    opened = "opened"
    updated = "updated"
    escalated = "escalated"
    acknowledged = "acknowledged"
    resolved = "resolved"


class Evidence(Contract):
    comment_id: str
    external_id: str
    label: str
    score: float
    flags: list[str] = Field(default_factory=list)
    created_at: AwareDatetime


class IncidentSnapshot(Contract):
    id: str
    community_id: str
    thread_id: str
    level: IncidentLevel
    reason: str
    state: IncidentState
    opened_at: AwareDatetime
    updated_at: AwareDatetime
    acknowledged_at: AwareDatetime | None = None
    resolved_at: AwareDatetime | None = None
    comment_count: int = Field(ge=0)
    negative_count: int = Field(ge=0)
    recommended_actions: list[str] = Field(default_factory=list)
    evidence: list[Evidence] = Field(default_factory=list, description="The most recent comments, newest last.")


class IncidentMessage(Envelope):
    """One lifecycle step of an incident, keyed by community id."""

    event: IncidentEventType
    incident: IncidentSnapshot
    actor: str | None = Field(default=None, description="Who acted, for acknowledged and resolved.")
