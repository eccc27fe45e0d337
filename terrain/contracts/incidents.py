"""Incident lifecycle contract (`terrain.incidents.v1`)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from terrain.contracts.base import MAX_COUNT, AwareDatetime, Contract, Envelope


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


class IncidentKind(StrEnum):
    thread = "thread"
    spike = "spike"


ACTION_CODES = ("reply_public", "message_private", "hide", "answer_thread", "page", "field_visit")


class RecommendedAction(Contract):
    """One step of the playbook as data; `recommended_actions` carries the same rendered for people."""

    code: str = Field(
        description="reply_public, message_private, hide, answer_thread, page or field_visit; "
        "consumers skip codes they do not know."
    )
    comment_id: str | None = Field(default=None, description="The comment it is about, if any.")
    external_id: str | None = Field(default=None, description="That comment's id in its source.")
    deadline: AwareDatetime | None = Field(default=None, description="When it must be done by, if anything says.")
    params: dict[str, str] = Field(default_factory=dict, description="Details: flags, place, person, step.")


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
    comment_count: int = Field(ge=0, le=MAX_COUNT)
    negative_count: int = Field(ge=0, le=MAX_COUNT)
    recommended_actions: list[str] = Field(default_factory=list)
    evidence: list[Evidence] = Field(default_factory=list, description="The most recent comments, newest last.")
    kind: IncidentKind = Field(
        default=IncidentKind.thread,
        description="thread: one post's comments; spike: the whole community against its own baseline.",
    )
    actions: list[RecommendedAction] = Field(
        default_factory=list, description="The recommended actions as data (code, comment, deadline)."
    )
    language: str | None = Field(default=None, description="Language the reason and actions are written in.")
    place: str | None = Field(default=None, description="A place the incident concerns, if known.")
    ack_deadline: AwareDatetime | None = Field(
        default=None, description="When the paged person must acknowledge by, while a page is running."
    )


class IncidentMessage(Envelope):
    """One lifecycle step of an incident, keyed by community id."""

    event: IncidentEventType
    incident: IncidentSnapshot
    actor: str | None = Field(default=None, description="Who acted, for acknowledged and resolved.")
