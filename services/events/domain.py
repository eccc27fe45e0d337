"""Pure events logic: event ids, the upsert/merge rules and planned field visits from escalations.

Merge rules (an event logged again under the same id is an update, not a new event):

- ``community_id`` never changes: ids come from callers, so the same id from another community is a
  collision between two systems, not an update; it is refused (HTTP 409, dead-letter on the topic).
- ``kind``, ``title`` and ``starts_at`` are required in every write, so the latest write states them
  and wins.
- Every optional field (``ends_at``, ``location``, ``incident_id`` and the outcome's ``attendees``,
  ``ambassadors_met``, ``notes``) left out (null) keeps its stored value: a field app that reports
  only the attendance must not erase the notes written earlier. The price: v1 cannot clear a field.
- ``outcome.result`` defaults to ``pending``, so an update that says ``pending`` cannot tell "not
  decided" from "not stated": ``pending`` never replaces a decided result (success, mixed, failure,
  cancelled); a decided result replaces anything, so a result can still be corrected.
- The merged event must still end after it starts, else the update is refused (HTTP 422).
- ``origin``, ``escalation_id`` and ``recorded_at`` belong to the first write; ``updated_at`` moves
  only when the merge changed something, so a repost or a redelivery leaves the event as it was.
- A field visit planned from an escalation is written only when its id is absent: it never
  overwrites what the field team has already logged under that id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar

from pydantic import Field

from terrain.contracts import EscalationMessage, EscalationTarget, EventIn, EventOutcome
from terrain.contracts.base import AwareDatetime, derived_id

PENDING = "pending"
TITLE_MAX = 300
NOTES_MAX = 10_000


class Origin(StrEnum):
    """How an event first reached the service."""

    http = "http"
    topic = "topic"
    escalation = "escalation"


class StoredEvent(EventIn):
    """An event as the service keeps and serves it."""

    id: str = Field(description="The caller's id, or one the service gave it.")
    origin: Origin = Field(description="How the event first arrived: http, topic or escalation.")
    escalation_id: str | None = Field(default=None, description="The escalation that planned it, if any.")
    recorded_at: AwareDatetime = Field(description="When the service first stored it.")
    updated_at: AwareDatetime = Field(description="When a write last changed it.")


class Change(StrEnum):
    created = "created"
    updated = "updated"
    unchanged = "unchanged"


class RefusalKind(StrEnum):
    conflict = "conflict"
    invalid = "invalid"


@dataclass(frozen=True)
class Refusal:
    """Why an update cannot apply, naming the field at fault."""

    kind: RefusalKind
    field: str
    reason: str


@dataclass(frozen=True)
class Merged:
    event: StoredEvent
    change: Change


def outcome_event_id(given: str | None, message_id: str) -> str:
    """The stored id of an event from the topic: the caller's, else one derived from the message id,
    so a redelivered message lands on the same event."""
    return given if given is not None else derived_id("event", message_id)


def http_event_id(given: str | None, fresh: str) -> str:
    """The stored id of an event posted over HTTP: the caller's, else the fresh id handed in."""
    return given if given is not None else fresh


def field_visit_id(escalation_id: str) -> str:
    """The id of the field visit an escalation plans: the same escalation always plans the same visit."""
    return derived_id("event", "field_visit", escalation_id)


def merge_outcome(stored: EventOutcome, update: EventOutcome) -> EventOutcome:
    result = stored.result if update.result == PENDING else update.result
    return EventOutcome(
        attendees=_keep(stored.attendees, update.attendees),
        ambassadors_met=_keep(stored.ambassadors_met, update.ambassadors_met),
        result=result,
        notes=_keep(stored.notes, update.notes),
    )


T = TypeVar("T")


def _keep(stored: T | None, update: T | None) -> T | None:
    return stored if update is None else update


def merge(
    stored: StoredEvent | None, event_id: str, update: EventIn, origin: Origin, now: datetime
) -> Merged | Refusal:
    """Apply one write to what is stored under its id (see the module docstring for the rules)."""
    if stored is None:
        created = StoredEvent(
            **update.model_dump(exclude={"id"}), id=event_id, origin=origin, recorded_at=now, updated_at=now
        )
        return Merged(created, Change.created)
    if update.community_id != stored.community_id:
        return Refusal(
            RefusalKind.conflict,
            "community_id",
            f"event {event_id} belongs to another community; an event id cannot move between communities",
        )
    ends_at = _keep(stored.ends_at, update.ends_at)
    if ends_at is not None and ends_at < update.starts_at:
        return Refusal(
            RefusalKind.invalid,
            "ends_at",
            "the stored ends_at would fall before the new starts_at; send ends_at with the update",
        )
    candidate = stored.model_copy(
        update={
            "kind": update.kind,
            "title": update.title,
            "starts_at": update.starts_at,
            "ends_at": ends_at,
            "location": _keep(stored.location, update.location),
            "incident_id": _keep(stored.incident_id, update.incident_id),
            "outcome": merge_outcome(stored.outcome, update.outcome),
        }
    )
    if _content(candidate) == _content(stored):
        return Merged(stored, Change.unchanged)
    return Merged(candidate.model_copy(update={"updated_at": now}), Change.updated)


def _content(event: StoredEvent) -> dict[str, object]:
    return event.model_dump(exclude={"updated_at"})


M = TypeVar("M")


@dataclass(frozen=True)
class Applied(Generic[M]):
    """One write of a batch and what became of it."""

    item: M
    event_id: str
    result: Merged | Refusal


@dataclass(frozen=True)
class Folded(Generic[M]):
    applied: list[Applied[M]]
    final: dict[str, StoredEvent]
    """The state to store for every event the batch changed (created or updated)."""


def fold(
    stored: dict[str, StoredEvent],
    writes: Sequence[tuple[M, str, EventIn]],
    origin: Origin,
    now: datetime,
) -> Folded[M]:
    """Apply a batch of writes in order; a later write to the same id sees the earlier ones."""
    current = dict(stored)
    changed: set[str] = set()
    applied: list[Applied[M]] = []
    for item, event_id, update in writes:
        result = merge(current.get(event_id), event_id, update, origin, now)
        if isinstance(result, Merged) and result.change is not Change.unchanged:
            current[event_id] = result.event
            changed.add(event_id)
        applied.append(Applied(item, event_id, result))
    return Folded(applied, {eid: current[eid] for eid in current if eid in changed})


def plan_field_visit(escalation: EscalationMessage, now: datetime) -> StoredEvent | None:
    """The pending field visit a field-target escalation asks for; None for a human-target one.

    The visit starts, as a placeholder, when the escalation was raised: the field team moves it to the
    real date when they log the visit under the same id.
    """
    if escalation.target is not EscalationTarget.field:
        return None
    where = escalation.place or f"thread {escalation.thread_id}"
    return StoredEvent(
        id=field_visit_id(escalation.escalation_id),
        community_id=escalation.community_id,
        kind="field_visit",
        title=f"Field visit: {where}"[:TITLE_MAX],
        starts_at=escalation.occurred_at,
        location=escalation.place,
        incident_id=escalation.incident_id,
        outcome=EventOutcome(result=PENDING, notes=escalation.reason[:NOTES_MAX]),
        origin=Origin.escalation,
        escalation_id=escalation.escalation_id,
        recorded_at=now,
        updated_at=now,
    )
