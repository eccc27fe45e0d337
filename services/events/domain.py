"""Pure events logic: event ids, the upsert/merge rules, status moves and planned field visits from escalations.

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
- ``organiser``, ``follow_ups`` and ``assignee`` left out keep their stored values; a stated
  ``follow_ups`` list replaces the stored one. ``reason``, ``evidence`` and ``escalated_at`` come
  from the escalation that planned a visit and never change.
- Status (see :mod:`services.events.visits`): a write that states ``status`` asks for that move; one
  that does not, but carries a decided result, completes the event (cancels it for ``cancelled``);
  a new assignee on an open event is an assignment. A move the lifecycle forbids refuses the whole
  write (HTTP 409 naming the status, dead-letter on the topic). Each move is returned as a transition
  with who and when.
- Over HTTP, an event cannot be scheduled (moved to ``scheduled``, or given a new date while
  scheduled) for a start more than a grace before now (HTTP 422 naming ``starts_at``): a date in the
  past is a typo or a visit that took place, which ``close`` reports. Topics are not held to it: a
  field app's report may arrive late.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import Field

from services.events.visits import Action, Forbidden, Transition, action_for, is_open, next_status
from terrain.contracts import EscalationMessage, EscalationTarget, EventIn, EventOutcome, Evidence
from terrain.contracts.base import AwareDatetime, derived_id, one_line, utc_text
from terrain.contracts.events import PENDING, EventStatus

TITLE_MAX = 300
NOTES_MAX = 10_000
REASON_MAX = 2_000
# How far in the past a person may still schedule an event: a date typed a few minutes late still
# means "now"; TERRAIN_EVENTS_SCHEDULE_GRACE_S sets it for the service.
SCHEDULE_GRACE = timedelta(minutes=5)
# Results that say the event did not take place.
CANCELLED = "cancelled"


class Origin(StrEnum):
    """How an event first reached the service."""

    http = "http"
    topic = "topic"
    escalation = "escalation"


class StoredEvent(EventIn):
    """An event as the service keeps and serves it."""

    id: str = Field(description="The caller's id, or one the service gave it.")
    status: EventStatus = Field(description="requested, scheduled, done or cancelled.")
    actor: str | None = Field(default=None, exclude=True, description="Not stored: who acts is kept per transition.")
    origin: Origin = Field(description="How the event first arrived: http, topic or escalation.")
    escalation_id: str | None = Field(default=None, description="The escalation that planned it, if any.")
    reason: str | None = Field(default=None, description="Why the escalation asked for a field visit.")
    evidence: list[Evidence] = Field(default_factory=list, description="The comments the escalation pointed at.")
    escalated_at: AwareDatetime | None = Field(default=None, description="When the escalation was raised.")
    recorded_at: AwareDatetime = Field(description="When the service first stored it.")
    updated_at: AwareDatetime = Field(description="When a write last changed it.")


class Change(StrEnum):
    created = "created"
    updated = "updated"
    unchanged = "unchanged"


class RefusalKind(StrEnum):
    conflict = "conflict"
    invalid = "invalid"
    missing = "missing"


@dataclass(frozen=True)
class Refusal:
    """Why an update cannot apply, naming the field at fault (and, for a move the lifecycle forbids, the
    status the event is in)."""

    kind: RefusalKind
    field: str
    reason: str
    status: EventStatus | None = None


@dataclass(frozen=True)
class Merged:
    event: StoredEvent
    change: Change
    transitions: tuple[Transition, ...] = field(default=())


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


def initial_status(update: EventIn, now: datetime) -> EventStatus:
    """The status of a new event whose write does not state one: planned if it starts later, else done."""
    if update.status is not None:
        return update.status
    if update.outcome.result == CANCELLED:
        return EventStatus.cancelled
    if update.outcome.result != PENDING:
        return EventStatus.done
    return EventStatus.scheduled if update.starts_at > now else EventStatus.done


def implied_action(stored: StoredEvent, update: EventIn) -> Action | None:
    """The lifecycle move a write asks for (see the module docstring), or None for a plain update."""
    if update.status is not None:
        return action_for(update.status)
    if update.outcome.result == CANCELLED:
        return Action.cancel
    if update.outcome.result != PENDING:
        return Action.complete
    if update.assignee is not None and update.assignee != stored.assignee and is_open(stored.status):
        return Action.assign
    return None


def _refuse(forbidden: Forbidden) -> Refusal:
    return Refusal(RefusalKind.conflict, "status", forbidden.reason, forbidden.before)


def scheduled_in_the_past(
    before: StoredEvent | None, after: StoredEvent, now: datetime, grace: timedelta = SCHEDULE_GRACE
) -> Refusal | None:
    """Why a write that schedules `after` is refused: it moves the event to ``scheduled``, or moves a
    scheduled event's date, to a start more than `grace` before `now`. None when it does not.

    A scheduled event whose date is left as it was (a new assignee, a repeat) is not scheduled again.
    """
    if after.status is not EventStatus.scheduled or after.starts_at >= now - grace:
        return None
    if before is not None and before.status is EventStatus.scheduled and before.starts_at == after.starts_at:
        return None
    minutes = int(grace.total_seconds() // 60)
    return Refusal(
        RefusalKind.invalid,
        "starts_at",
        f"{utc_text(after.starts_at)} is more than {minutes} minute(s) in the past (now {utc_text(now)}):"
        " schedule a date to come, or close the event to report one that took place",
    )


def _transition(
    event: StoredEvent, before: EventStatus | None, action: Action, actor: str, now: datetime, note: str | None
) -> Transition:
    return Transition(
        event_id=event.id,
        before=before,
        after=event.status,
        action=action,
        actor=actor,
        at=now,
        note=note,
        assignee=event.assignee,
        scheduled_for=event.starts_at if event.status is EventStatus.scheduled else None,
    )


def _moved(before: StoredEvent, after: StoredEvent) -> bool:
    """Whether a lifecycle step really happened: a new status, date or assignee."""
    return (before.status, before.starts_at, before.assignee) != (after.status, after.starts_at, after.assignee)


def merge(
    stored: StoredEvent | None,
    event_id: str,
    update: EventIn,
    origin: Origin,
    now: datetime,
    actor: str | None = None,
    grace: timedelta = SCHEDULE_GRACE,
) -> Merged | Refusal:
    """Apply one write to what is stored under its id (see the module docstring for the rules)."""
    who = update.actor or actor or origin.value
    if stored is None:
        status = initial_status(update, now)
        created = StoredEvent(
            **update.model_dump(exclude={"id", "status", "actor"}),
            id=event_id,
            status=status,
            origin=origin,
            recorded_at=now,
            updated_at=now,
        )
        move = next_status(None, action_for(status))
        if isinstance(move, Forbidden):
            return _refuse(move)
        past = scheduled_in_the_past(None, created, now, grace) if origin is Origin.http else None
        if past is not None:
            return past
        return Merged(created, Change.created, (_transition(created, None, move.action, who, now, None),))
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
    status = stored.status
    action = implied_action(stored, update)
    if action is not None:
        move = next_status(stored.status, action)
        if isinstance(move, Forbidden):
            return _refuse(move)
        status = move.after
    outcome = merge_outcome(stored.outcome, update.outcome)
    if status is EventStatus.cancelled and outcome.result == PENDING:
        outcome = outcome.model_copy(update={"result": CANCELLED})
    candidate = stored.model_copy(
        update={
            "kind": update.kind,
            "title": update.title,
            "starts_at": update.starts_at,
            "ends_at": ends_at,
            "location": _keep(stored.location, update.location),
            "incident_id": _keep(stored.incident_id, update.incident_id),
            "outcome": outcome,
            "organiser": _keep(stored.organiser, update.organiser),
            "follow_ups": _keep(stored.follow_ups, update.follow_ups),
            "assignee": _keep(stored.assignee, update.assignee),
            "status": status,
        }
    )
    if _content(candidate) == _content(stored):
        return Merged(stored, Change.unchanged)
    past = scheduled_in_the_past(stored, candidate, now, grace) if origin is Origin.http else None
    if past is not None:
        return past
    transitions: tuple[Transition, ...] = ()
    if action is not None and _moved(stored, candidate):
        transitions = (_transition(candidate, stored.status, action, who, now, None),)
    return Merged(candidate.model_copy(update={"updated_at": now}), Change.updated, transitions)


def _content(event: StoredEvent) -> dict[str, object]:
    return event.model_dump(exclude={"updated_at"})


# --- operator commands on one event (the events API's schedule, assign, close and cancel) ----------


def act(
    stored: StoredEvent | None,
    event_id: str,
    action: Action,
    changes: dict[str, Any],
    actor: str,
    now: datetime,
    note: str | None = None,
    grace: timedelta = SCHEDULE_GRACE,
) -> Merged | Refusal:
    """Apply an operator's command: check the move, apply its changes, keep the transition.

    A command the current status forbids is refused naming that status. A command whose effect is
    already in place (the same schedule twice, a second cancel) is a no-op, checked before the date
    rule so that a retried schedule still answers as the first one did; any other is kept as a
    transition, even one that leaves the status as it was (a new assignee, a corrected outcome).
    """
    if stored is None:
        return Refusal(RefusalKind.missing, "id", f"no event with id {event_id}")
    move = next_status(stored.status, action)
    if isinstance(move, Forbidden):
        return _refuse(move)
    fields = {k: v for k, v in changes.items() if v is not None}
    if "outcome" in fields:
        fields["outcome"] = merge_outcome(stored.outcome, fields["outcome"])
    fields["status"] = move.after
    candidate = stored.model_copy(update=fields)
    if candidate.ends_at is not None and candidate.ends_at < candidate.starts_at:
        return Refusal(RefusalKind.invalid, "ends_at", "ends_at must not be before starts_at")
    if action is Action.cancel and candidate.outcome.result == PENDING:
        candidate = candidate.model_copy(update={"outcome": candidate.outcome.model_copy(update={"result": CANCELLED})})
    if _content(candidate) == _content(stored):
        return Merged(stored, Change.unchanged)
    past = scheduled_in_the_past(stored, candidate, now, grace)
    if past is not None:
        return past
    # Every change an operator's command makes is kept, a correction of a done visit's outcome too.
    transitions = (_transition(candidate, stored.status, action, actor, now, note),)
    return Merged(candidate.model_copy(update={"updated_at": now}), Change.updated, transitions)


# --- batches ------------------------------------------------------------------------------------------

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

    @property
    def transitions(self) -> list[Transition]:
        return [t for a in self.applied if isinstance(a.result, Merged) for t in a.result.transitions]


def fold(
    stored: dict[str, StoredEvent],
    writes: Sequence[tuple[M, str, EventIn]],
    origin: Origin,
    now: datetime,
    actor_of: Any = None,
) -> Folded[M]:
    """Apply a batch of writes in order; a later write to the same id sees the earlier ones.

    `actor_of(item)` names who made a write that does not say (the message's producer).
    """
    current = dict(stored)
    changed: set[str] = set()
    applied: list[Applied[M]] = []
    for item, event_id, update in writes:
        actor = actor_of(item) if actor_of is not None else None
        result = merge(current.get(event_id), event_id, update, origin, now, actor)
        if isinstance(result, Merged) and result.change is not Change.unchanged:
            current[event_id] = result.event
            changed.add(event_id)
        applied.append(Applied(item, event_id, result))
    return Folded(applied, {eid: current[eid] for eid in current if eid in changed})


# --- field visits from escalations -----------------------------------------------------------------


def plan_field_visit(escalation: EscalationMessage, now: datetime) -> StoredEvent | None:
    """The requested field visit a field-target escalation asks for; None for a human-target one.

    Reads only the escalation fields of the v1 contract's first release, so fields added later
    (a policy step, recommended actions) change nothing here. The visit starts, as a placeholder,
    when the escalation was raised: scheduling it sets the real date.
    """
    if escalation.target is not EscalationTarget.field:
        return None
    # An escalation's place is free text (a policy file's, or a comment's stored before places were held to one
    # line); the event's location is one line.
    place = one_line(escalation.place or "") or None
    where = place or f"thread {escalation.thread_id}"
    return StoredEvent(
        id=field_visit_id(escalation.escalation_id),
        community_id=escalation.community_id,
        kind="field_visit",
        title=f"Field visit: {where}"[:TITLE_MAX],
        starts_at=escalation.occurred_at,
        location=place,
        incident_id=escalation.incident_id,
        outcome=EventOutcome(result=PENDING),
        status=EventStatus.requested,
        origin=Origin.escalation,
        escalation_id=escalation.escalation_id,
        reason=escalation.reason[:REASON_MAX],
        evidence=list(escalation.evidence),
        escalated_at=escalation.occurred_at,
        recorded_at=now,
        updated_at=now,
    )


def planned_transition(visit: StoredEvent, actor: str, now: datetime) -> Transition:
    """The first kept step of a visit an escalation planned."""
    return _transition(visit, None, Action.request, actor, now, visit.reason)


def escalation_to_visit(event: StoredEvent, transition: Transition) -> tuple[str, float] | None:
    """For a visit an escalation asked for: (step, seconds from the escalation to it) when the step
    is the visit being scheduled (to the date it is set for) or done (to when it took place)."""
    if event.escalated_at is None or transition.before == transition.after:
        return None
    if transition.after is EventStatus.scheduled:
        return "scheduled", max(0.0, (event.starts_at - event.escalated_at).total_seconds())
    if transition.after is EventStatus.done:
        return "done", max(0.0, (event.starts_at - event.escalated_at).total_seconds())
    return None
