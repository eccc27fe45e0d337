"""In-real-life events and field visits with their outcomes (`terrain.events.outcomes.v1`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from terrain.contracts.base import MAX_COUNT, AwareDatetime, Contract, Envelope, Identifier, OneLine

# What kind of in-real-life event it was; the first five are v1's original values.
EVENT_KINDS = ("meetup", "apero", "field_visit", "workshop", "other", "ambassador_event", "conference")
# How it went (success … cancelled), its effect on the situation (resolved … worse), or not decided yet.
EVENT_RESULTS = (
    "success", "mixed", "failure", "cancelled", "pending", "resolved", "improved", "unchanged", "worse",
)
PENDING = "pending"


def _one_of(values: tuple[str, ...]) -> str:
    return "^(" + "|".join(values) + ")$"


class EventStatus(StrEnum):
    """Where an event stands: a field visit goes requested → scheduled → done (or cancelled)."""

    requested = "requested"
    scheduled = "scheduled"
    done = "done"
    cancelled = "cancelled"


class EventOutcome(Contract):
    attendees: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    ambassadors_met: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    result: Annotated[str, StringConstraints(pattern=_one_of(EVENT_RESULTS))] = Field(
        default=PENDING,
        description=(
            "How it went (success, mixed, failure, cancelled), its effect on the situation (resolved, improved,"
            " unchanged, worse), or pending while not decided."
        ),
    )
    notes: Annotated[str, StringConstraints(max_length=10_000)] | None = None


class EventIn(Contract):
    """An event as a person or a field app logs it, planned or after the fact."""

    id: Identifier | None = Field(default=None, description="Caller's id for the event; makes retries safe.")
    community_id: Identifier
    kind: Annotated[str, StringConstraints(pattern=_one_of(EVENT_KINDS))]
    title: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None = None
    location: Annotated[OneLine, StringConstraints(max_length=300)] | None = Field(
        default=None, description="Where it happens: a place, one line."
    )
    incident_id: Identifier | None = None
    outcome: EventOutcome = Field(default_factory=EventOutcome)
    organiser: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, description="Who organises or leads it (a person or a team)."
    )
    follow_ups: list[Annotated[str, StringConstraints(min_length=1, max_length=500)]] | None = Field(
        default=None, max_length=50, description="What was agreed to do next; a new list replaces the stored one."
    )
    status: EventStatus | None = Field(
        default=None,
        description=(
            "The status this write moves the event to. Left out: a decided result closes a planned event"
            " (done, or cancelled for the result cancelled); a new event is scheduled when it starts in the"
            " future, else done."
        ),
    )
    assignee: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, description="Who is to go (field visits)."
    )
    actor: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, description="Who makes this write; kept with the status change it causes."
    )

    @model_validator(mode="after")
    def _ends_after_start(self) -> EventIn:
        if self.ends_at is not None and self.ends_at < self.starts_at:
            raise ValueError("ends_at must not be before starts_at")
        return self


class EventOutcomeMessage(Envelope):
    """`terrain.events.outcomes.v1`: an event and its outcome, keyed by community id."""

    event: EventIn
