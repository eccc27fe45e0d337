"""In-real-life events and field visits with their outcomes (`terrain.events.outcomes.v1`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from terrain.contracts.base import AwareDatetime, Contract, Envelope

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class EventOutcome(Contract):
    attendees: int | None = Field(default=None, ge=0)
    ambassadors_met: int | None = Field(default=None, ge=0)
    result: Annotated[str, StringConstraints(pattern=r"^(success|mixed|failure|cancelled|pending)$")] = "pending"
    notes: Annotated[str, StringConstraints(max_length=10_000)] | None = None


class EventIn(Contract):
    """An event as a person or a field app logs it."""

    id: Identifier | None = Field(default=None, description="Caller's id for the event; makes retries safe.")
    community_id: Identifier
    kind: Annotated[str, StringConstraints(pattern=r"^(meetup|apero|field_visit|workshop|other)$")]
    title: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None = None
    location: Annotated[str, StringConstraints(max_length=300)] | None = None
    incident_id: Identifier | None = None
    outcome: EventOutcome = Field(default_factory=EventOutcome)

    @model_validator(mode="after")
    def _ends_after_start(self) -> EventIn:
        if self.ends_at is not None and self.ends_at < self.starts_at:
            raise ValueError("ends_at must not be before starts_at")
        return self


class EventOutcomeMessage(Envelope):
    """`terrain.events.outcomes.v1`: an event and its outcome, keyed by community id."""

    event: EventIn
