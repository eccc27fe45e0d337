"""The events HTTP API: plain route functions, each declaring the permission it needs beside its path; every read
and every action is limited to the caller's communities in the query that reads the rows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.events.domain import CANCELLED, Change, Merged, Refusal, RefusalKind, StoredEvent
from services.events.handlers import EventLog
from services.events.visits import Action
from terrain import http, paging
from terrain.access.deps import Agent, Reader, api_router, out_of_scope
from terrain.contracts import EventIn, EventOutcome
from terrain.contracts.base import AwareDatetime, utc_text
from terrain.contracts.events import EVENT_KINDS, PENDING, EventStatus

KIND_PATTERN = "^(" + "|".join(EVENT_KINDS) + ")$"
EVENTS = "events"  # the list a cursor belongs to
# A cursor holds an event's start and id, and an id is the caller's: up to 200 characters of up to 4 bytes each,
# more than paging.MAX_CURSOR_CHARS holds. Still bounded before it is read.
CURSOR_MAX = 1200
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
Note = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
IGNORED_ACTOR = ("Accepted for compatibility and ignored: the timeline names the caller's identity (the API key, "
                 "the signed-in person), never a name in the body.")

router = api_router()


def event_log(request: Request) -> EventLog:
    """The service's event store, which `build_app` hands over through `app.state`."""
    log: EventLog = request.app.state.events
    return log


Events = Annotated[EventLog, Depends(event_log)]


# --- bodies -----------------------------------------------------------------------------------------------


class EventWrite(EventIn):
    """An event to log or update under its id (the contract of `terrain.events.outcomes.v1`'s events)."""

    actor: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, description=IGNORED_ACTOR)


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actor: Name | None = Field(default=None, description=IGNORED_ACTOR)
    note: Note | None = Field(default=None, description="Kept with the step in the event's history.")


class ScheduleIn(_Command):
    starts_at: AwareDatetime = Field(description=(
        "When the visit or event will take place; no earlier than a few minutes before now "
        "(TERRAIN_EVENTS_SCHEDULE_GRACE_S)."))
    ends_at: AwareDatetime | None = None
    assignee: Name | None = Field(default=None, description="Who is to go.")


class AssignIn(_Command):
    assignee: Name


class CloseIn(_Command):
    outcome: EventOutcome = Field(description="How it went and its effect; a decided result is required.")
    follow_ups: list[Annotated[str, StringConstraints(min_length=1, max_length=500)]] | None = Field(
        default=None, max_length=50
    )
    starts_at: AwareDatetime | None = Field(default=None, description="When it really took place, if not as planned.")
    ends_at: AwareDatetime | None = None


class CancelIn(_Command):
    note: Note = Field(description="Why it is cancelled.")


# --- answers ----------------------------------------------------------------------------------------------


def refused(refusal: Refusal) -> http.HTTPRefusal:
    """404 for an event that does not exist (or not in the caller's scope), 409 naming the status for a move the
    lifecycle forbids (and for an id taken by another community), 422 naming the field for a bad value."""
    status = {RefusalKind.conflict: 409, RefusalKind.missing: 404}.get(refusal.kind, 422)
    answer = http.invalid_request([{"field": refusal.field, "message": refusal.reason}], what="event refused",
                                  status_code=status)
    if refusal.status is not None:
        # `state`, as every service's 409 names it (an event's own field is `status`).
        answer.fields["state"] = refusal.status.value
    return answer


def _event(event: StoredEvent) -> dict[str, Any]:
    return event.model_dump(mode="json")


def _command_answer(result: Merged | Refusal, response: Response) -> dict[str, Any]:
    """A command's answer: the event as it now stands, and whether this command changed it. A repeat whose effect
    is already in place answers the same 200 with `changed: false`."""
    if isinstance(result, Refusal):
        raise refused(result)
    if result.change is Change.unchanged:
        response.headers["X-Terrain-Change"] = "unchanged"
    return {**_event(result.event), "changed": result.change is not Change.unchanged}


def _missing(event_id: str) -> HTTPException:
    # The same answer whether the event does not exist or belongs to a community out of the caller's scope.
    return HTTPException(status_code=404, detail=f"no event with id {event_id}")


# --- routes -----------------------------------------------------------------------------------------------


@router.post(
    "/v1/events",
    status_code=201,
    tags=["events"],
    responses={
        200: {"description": "An event with this id existed: the write was merged into it (`changed` says whether "
                             "it changed anything)."},
        403: {"description": "The event's community is outside the caller's scope."},
        409: {"description": "The id belongs to an event of another community, or the status move is not allowed "
                             "(`state` names the event's status)."},
    },
)
async def post_event(event: EventWrite, who: Agent, events: Events, response: Response) -> dict[str, Any]:
    """Log an event (agent), planned or after the fact, or update the one stored under the same `id`. The
    timeline names the caller; a body's `actor` is ignored."""
    if not who.scope.allows(event.community_id):
        raise out_of_scope(event.community_id)
    result = await events.log(event, who.actor)
    if isinstance(result, Refusal):
        raise refused(result)
    if result.change is not Change.created:
        response.status_code = 200
    return _command_answer(result, response)


@router.get("/v1/events", tags=["events"])
async def list_events(
    who: Reader,
    events: Events,
    community_id: Annotated[str | None, Query(max_length=200)] = None,
    kind: Annotated[str | None, Query(pattern=KIND_PATTERN)] = None,
    incident_id: Annotated[str | None, Query(max_length=200)] = None,
    status: EventStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=paging.MAX_LIMIT, description=paging.LIMIT_DESCRIPTION)] = (
        paging.DEFAULT_LIMIT),
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX, description=paging.CURSOR_DESCRIPTION)] = None,
    offset: Annotated[int, Query(ge=0, deprecated=True, description=(
        "Kept for older clients: rows to skip. Use `cursor`, which holds its place while events are added."))] = 0,
) -> dict[str, Any]:
    """Events of the caller's communities (reader), newest start first: a page of `items`, the `total` that match
    (in the caller's scope) and `next`, the cursor of the following page (null on the last)."""
    after = paging.after(EVENTS, cursor, offset)
    items, total, more = await events.find(
        scope=who.scope, community_id=community_id, kind=kind, incident_id=incident_id,
        status=status.value if status else None, after=after, limit=limit, offset=offset,
    )
    last = items[-1] if more and items else None
    return {"items": [_event(e) for e in items], "total": total,
            "next": paging.encode(EVENTS, last.starts_at, last.id) if last is not None else None}


@router.get("/v1/events/{event_id}", tags=["events"])
async def get_event(event_id: str, who: Reader, events: Events) -> dict[str, Any]:
    """One event (reader); 404 when it does not exist or its community is outside the caller's scope."""
    event = await events.get(event_id, who.scope)
    if event is None:
        raise _missing(event_id)
    return _event(event)


@router.get("/v1/events/{event_id}/history", tags=["field visits"])
async def get_history(event_id: str, who: Reader, events: Events) -> dict[str, Any]:
    """Every lifecycle step of the event (reader), oldest first, with who and when."""
    if await events.get(event_id, who.scope) is None:
        raise _missing(event_id)
    items = await events.history(event_id, who.scope)
    return {"items": [{k: (utc_text(v) if isinstance(v, datetime) else v) for k, v in i.items()} for i in items]}


@router.post("/v1/events/{event_id}/schedule", tags=["field visits"])
async def schedule(event_id: str, body: ScheduleIn, who: Agent, events: Events, response: Response) -> dict[str, Any]:
    """Set (or move) the date, and optionally who goes (agent): requested → scheduled. A date more than
    TERRAIN_EVENTS_SCHEDULE_GRACE_S in the past is refused (422, `starts_at`)."""
    changes = {"starts_at": body.starts_at, "ends_at": body.ends_at, "assignee": body.assignee}
    return _command_answer(
        await events.act(event_id, Action.schedule, changes, who.actor, body.note, who.scope), response)


@router.post("/v1/events/{event_id}/assign", tags=["field visits"])
async def assign(event_id: str, body: AssignIn, who: Agent, events: Events, response: Response) -> dict[str, Any]:
    """Name who goes, without changing the status (agent)."""
    return _command_answer(
        await events.act(event_id, Action.assign, {"assignee": body.assignee}, who.actor, body.note, who.scope),
        response)


@router.post("/v1/events/{event_id}/close", tags=["field visits"])
async def close(event_id: str, body: CloseIn, who: Agent, events: Events, response: Response) -> dict[str, Any]:
    """It took place (agent): → done, with the outcome (attendance, ambassadors met, notes, result) and
    follow-ups."""
    if body.outcome.result in (PENDING, CANCELLED):
        raise refused(Refusal(
            RefusalKind.invalid, "outcome.result",
            "closing needs a decided result (success, mixed, failure, resolved, improved, unchanged, worse);"
            " use /cancel for an event that did not take place",
        ))
    changes = {"outcome": body.outcome, "follow_ups": body.follow_ups, "starts_at": body.starts_at,
               "ends_at": body.ends_at}
    return _command_answer(
        await events.act(event_id, Action.complete, changes, who.actor, body.note, who.scope), response)


@router.post("/v1/events/{event_id}/cancel", tags=["field visits"])
async def cancel(event_id: str, body: CancelIn, who: Agent, events: Events, response: Response) -> dict[str, Any]:
    """It will not take place (agent): → cancelled, with why."""
    return _command_answer(await events.act(event_id, Action.cancel, {}, who.actor, body.note, who.scope), response)


@router.get("/v1/events/{event_id}/impact", tags=["impact"])
async def get_impact(
    event_id: str, who: Reader, events: Events, window_days: Annotated[int, Query(ge=3, le=90)] = 14
) -> dict[str, Any]:
    """The community's engagement after vs before the event (reader) and, when comparable communities without an
    event exist, a difference-in-differences estimate with its confidence interval; plus what could not be
    concluded. Comparable communities are drawn from the caller's scope only (`comparison_limited_to_scope`):
    the report holds no number of a community the caller may not see."""
    report = await events.impact(event_id, window_days, who.scope)
    if report is None:
        raise _missing(event_id)
    return {**report.as_dict(), "comparison_limited_to_scope": not who.scope.everything}
