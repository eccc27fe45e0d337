"""The lifecycle of an event as a pure state machine: requested → scheduled → done, or cancelled.

A field visit starts ``requested`` (an escalation asked for it); an operator schedules it (a date,
maybe someone to go), may assign or reschedule it, and closes it as ``done`` with an outcome, or
cancels it. Any other event enters the machine where it is logged: planned (``scheduled``) or after
the fact (``done``). Every move is kept as a :class:`Transition` with who made it and when.

Rules worth knowing (each one is a row of :data:`TRANSITIONS`):

- ``done`` straight from ``requested`` is allowed: a team that went before anyone scheduled the
  visit in Terrain still made the visit, and refusing its report would lose it.
- ``done`` and ``cancelled`` are final: a visit that must happen after all is a new visit, linked
  to the same incident. Completing a ``done`` event again corrects its outcome (no new status).
- Repeating a move that changes nothing (a second request, the same schedule, a second cancel)
  is a no-op, so a retried request or a redelivered message records nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from terrain.contracts.events import EventStatus


class Action(StrEnum):
    """What a person, a field app or an escalation does to an event."""

    request = "request"
    schedule = "schedule"
    assign = "assign"
    complete = "complete"
    cancel = "cancel"


# (status before, action) → status after; None before means the event does not exist yet.
TRANSITIONS: dict[tuple[EventStatus | None, Action], EventStatus] = {
    (None, Action.request): EventStatus.requested,
    (None, Action.schedule): EventStatus.scheduled,
    (None, Action.complete): EventStatus.done,
    (None, Action.cancel): EventStatus.cancelled,
    (EventStatus.requested, Action.request): EventStatus.requested,
    (EventStatus.requested, Action.schedule): EventStatus.scheduled,
    (EventStatus.requested, Action.assign): EventStatus.requested,
    (EventStatus.requested, Action.complete): EventStatus.done,
    (EventStatus.requested, Action.cancel): EventStatus.cancelled,
    (EventStatus.scheduled, Action.schedule): EventStatus.scheduled,
    (EventStatus.scheduled, Action.assign): EventStatus.scheduled,
    (EventStatus.scheduled, Action.complete): EventStatus.done,
    (EventStatus.scheduled, Action.cancel): EventStatus.cancelled,
    (EventStatus.done, Action.complete): EventStatus.done,
    (EventStatus.cancelled, Action.cancel): EventStatus.cancelled,
}

OPEN = frozenset({EventStatus.requested, EventStatus.scheduled})


@dataclass(frozen=True)
class Move:
    """A status change that is allowed, and whether it is a change at all."""

    before: EventStatus | None
    after: EventStatus
    action: Action


@dataclass(frozen=True)
class Forbidden:
    """A move the lifecycle refuses, with a sentence for the person who tried it."""

    before: EventStatus | None
    action: Action
    reason: str


def next_status(before: EventStatus | None, action: Action) -> Move | Forbidden:
    """The status after `action`, or why it is not allowed from `before`."""
    after = TRANSITIONS.get((before, action))
    if after is not None:
        return Move(before, after, action)
    if before is None:
        return Forbidden(before, action, f"cannot {action.value} an event that does not exist")
    if before in (EventStatus.done, EventStatus.cancelled):
        return Forbidden(
            before, action, f"the event is {before.value}, which is final; log a new event instead of {action.value}"
        )
    return Forbidden(before, action, f"cannot {action.value} an event that is {before.value}")


def action_for(target: EventStatus) -> Action:
    """The action that asks for a target status (a write that states `status`)."""
    return {
        EventStatus.requested: Action.request,
        EventStatus.scheduled: Action.schedule,
        EventStatus.done: Action.complete,
        EventStatus.cancelled: Action.cancel,
    }[target]


@dataclass(frozen=True)
class Transition:
    """One kept step of an event's life: what happened, who did it and when."""

    event_id: str
    before: EventStatus | None
    after: EventStatus
    action: Action
    actor: str
    at: datetime
    note: str | None = None
    assignee: str | None = None
    scheduled_for: datetime | None = None


def is_open(status: EventStatus) -> bool:
    return status in OPEN
