"""The escalation service's HTTP API: incidents, notes, silences and the policy in force. Each route declares the
permission it needs beside its path, reads and writes only within the caller's scope, and names the caller's
identity (never a name from the body) in what it records."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import pydantic
from fastapi import Body, Depends, Query, Request, Response
from pydantic import BaseModel, Field, model_validator

from services.escalation.domain import Silence
from services.escalation.handlers import Escalator, IllegalTransition, UnknownIncident, UnknownSilence
from terrain import paging
from terrain.access.deps import Agent, Moderator, Reader, api_router, out_of_scope
from terrain.access.model import Identity, Permission
from terrain.contracts import IncidentEventType, IncidentLevel, IncidentSnapshot, IncidentState
from terrain.contracts.base import AwareDatetime, Identifier
from terrain.http import HTTPRefusal, invalid_request

# A moderator silences for up to a day; longer needs an admin (as does a silence over every community).
MODERATOR_SILENCE = timedelta(hours=24)
INCIDENTS = "incidents"
SILENCES = "silences"
IGNORED = "Accepted for older clients and ignored: the caller's identity is recorded."

router = api_router()


def _escalator(request: Request) -> Escalator:
    escalator: Escalator = request.app.state.escalator
    return escalator


Escalation = Annotated[Escalator, Depends(_escalator)]
Cursor = Annotated[str | None, Query(max_length=paging.MAX_CURSOR_CHARS, description=paging.CURSOR_DESCRIPTION)]
Limit = Annotated[int, Query(ge=1, le=paging.MAX_LIMIT, description=paging.LIMIT_DESCRIPTION)]


# --- incidents -------------------------------------------------------------------------------------------


class TransitionIn(BaseModel):
    """An optional note for the timeline."""

    actor: str | None = Field(default=None, max_length=200, description=IGNORED)
    note: str | None = Field(default=None, max_length=2000)


class TransitionOut(IncidentSnapshot):
    changed: bool = Field(description="False when the incident was already in that state: a repeat changes "
                                      "nothing and records nothing.")


class NoteIn(BaseModel):
    actor: str | None = Field(default=None, max_length=200, description=IGNORED)
    text: str = Field(min_length=1, max_length=5000)


class IncidentList(BaseModel):
    items: list[IncidentSnapshot]
    total: int = Field(description="Incidents matching the filters within your scope, over every page.")
    next: str | None = Field(description="Give it as ?cursor= for the next page; null on the last page.")


def _no_incident(incident_id: str) -> HTTPRefusal:
    # The same answer for an incident outside the caller's scope: a stranger must not learn it exists.
    return HTTPRefusal(404, f"no incident {incident_id}")


@router.get("/v1/incidents", tags=["incidents"])
async def list_incidents(
    who: Reader,
    escalator: Escalation,
    community_id: Annotated[str | None, Query(max_length=200)] = None,
    state: IncidentState | None = None,
    level: IncidentLevel | None = None,
    # A filter, not a stored time: any instant with an offset will do ("since 2999": nothing yet).
    since: Annotated[pydantic.AwareDatetime | None, Query(description="Updated at or after (ISO 8601).")] = None,
    limit: Limit = paging.DEFAULT_LIMIT,
    cursor: Cursor = None,
    offset: Annotated[int, Query(ge=0, deprecated=True, description="Skip this many (older clients; page with "
                                                                    "`cursor`).")] = 0,
) -> IncidentList:
    """Incidents within your scope, most recently updated first, a page at a time."""
    after = paging.after(INCIDENTS, cursor, offset)
    found, total = await escalator.list_incidents(
        community_id=community_id, state=state, level=level, since=since, limit=limit + 1, offset=offset,
        scope=who.scope, after=after,
    )
    items = found[:limit]
    more = len(found) > limit
    return IncidentList(items=items, total=total,
                        next=paging.encode(INCIDENTS, items[-1].updated_at, items[-1].id) if more else None)


@router.get("/v1/incidents/{incident_id}", tags=["incidents"])
async def get_incident(incident_id: str, who: Reader, escalator: Escalation) -> dict[str, Any]:
    """The incident with all its evidence, its timeline, its frozen policy and its notifications."""
    try:
        return await escalator.detail(incident_id, scope=who.scope)
    except UnknownIncident:
        raise _no_incident(incident_id) from None


async def _transition(escalator: Escalator, who: Identity, incident_id: str, event: IncidentEventType,
                      body: TransitionIn | None) -> TransitionOut:
    try:
        snapshot, changed = await escalator.transition(
            incident_id, event, who.actor, body.note if body else None, scope=who.scope)
    except UnknownIncident:
        raise _no_incident(incident_id) from None
    except IllegalTransition as exc:
        raise HTTPRefusal(409, str(exc), state=exc.state.value) from None
    return TransitionOut(**snapshot.model_dump(), changed=changed)


@router.post("/v1/incidents/{incident_id}/ack", tags=["incidents"])
async def acknowledge(
    incident_id: str, who: Agent, escalator: Escalation, body: Annotated[TransitionIn | None, Body()] = None
) -> TransitionOut:
    """Take the incident: its paging stops. Again on an acknowledged one: 200, `changed: false`; on a resolved
    one: 409."""
    return await _transition(escalator, who, incident_id, IncidentEventType.acknowledged, body)


@router.post("/v1/incidents/{incident_id}/resolve", tags=["incidents"])
async def resolve(
    incident_id: str, who: Agent, escalator: Escalation, body: Annotated[TransitionIn | None, Body()] = None
) -> TransitionOut:
    """Close the incident. Again on a resolved one: 200, `changed: false`."""
    return await _transition(escalator, who, incident_id, IncidentEventType.resolved, body)


@router.post("/v1/incidents/{incident_id}/notes", tags=["incidents"], status_code=201)
async def add_note(incident_id: str, body: NoteIn, who: Agent, escalator: Escalation) -> dict[str, Any]:
    """A note on the incident's timeline, signed by the caller."""
    try:
        return await escalator.add_note(incident_id, who.actor, body.text, scope=who.scope)
    except UnknownIncident:
        raise _no_incident(incident_id) from None


# --- silences --------------------------------------------------------------------------------------------


class Matchers(BaseModel):
    """Equality matchers; a silence applies to incidents whose labels carry every given value."""

    model_config = {"extra": "forbid"}

    community_id: Identifier | None = None
    thread_id: Identifier | None = None
    level: IncidentLevel | None = None
    kind: Literal["thread", "spike"] | None = None

    def as_dict(self) -> dict[str, str]:
        return {k: str(v.value if hasattr(v, "value") else v) for k, v in self.model_dump().items() if v is not None}


class SilenceIn(BaseModel):
    matchers: Matchers
    starts_at: AwareDatetime | None = Field(default=None, description="Default: now.")
    ends_at: AwareDatetime | None = Field(default=None, description="Give ends_at or duration_minutes.")
    duration_minutes: float | None = Field(default=None, gt=0, le=60 * 24 * 90)
    created_by: str | None = Field(default=None, max_length=200, description=IGNORED)
    comment: str = Field(min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _span(self) -> SilenceIn:
        if not self.matchers.as_dict():
            raise ValueError("matchers: give at least one of community_id, thread_id, level, kind")
        if (self.ends_at is None) == (self.duration_minutes is None):
            raise ValueError("give exactly one of ends_at and duration_minutes")
        if self.ends_at is not None and self.starts_at is not None and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class SilenceOut(BaseModel):
    id: str
    matchers: dict[str, str]
    starts_at: AwareDatetime  # the kernel's: written in UTC with Z, whatever offset the request gave
    ends_at: AwareDatetime
    created_by: str
    comment: str
    expired_at: AwareDatetime | None
    active: bool
    created_at: AwareDatetime | None = None


class ExpiredSilence(SilenceOut):
    changed: bool = Field(description="False when the silence had already ended or been expired (a repeat).")


class SilenceList(BaseModel):
    items: list[SilenceOut]
    total: int = Field(description="Silences matching within your scope, over every page.")
    next: str | None = Field(description="Give it as ?cursor= for the next page; null on the last page.")


def _silence_out(s: Silence, now: datetime) -> SilenceOut:
    return SilenceOut(
        id=s.id, matchers=dict(s.matchers), starts_at=s.starts_at, ends_at=s.ends_at, created_by=s.created_by,
        comment=s.comment, expired_at=s.expired_at, active=s.active(now), created_at=s.created_at,
    )


def silence_refusal(who: Identity, community_id: str | None, span: timedelta) -> HTTPRefusal | None:
    """Why `who` may not make a silence over `community_id` (None: every community) lasting `span`, else None.
    A silence stays within the caller's scope; one over every community, or longer than a day, needs an admin."""
    admin = who.may(Permission.administer)
    if community_id is not None and not who.scope.allows(community_id):
        return out_of_scope(community_id)
    if community_id is None and not who.scope.everything:
        return HTTPRefusal(403, "give a community_id matcher: a silence without one matches every community, "
                                f"and your scope is {who.scope}")
    if community_id is None and not admin:
        return HTTPRefusal(403, "a silence without a community_id matcher matches every community: that needs "
                                "the administer permission (roles: admin)")
    if span > MODERATOR_SILENCE and not admin:
        return HTTPRefusal(403, f"a silence longer than 24 hours ({span} asked) needs the administer permission "
                                "(roles: admin)")
    return None


@router.post("/v1/silences", tags=["silences"], status_code=201)
async def create_silence(body: SilenceIn, who: Moderator, escalator: Escalation) -> SilenceOut:
    """Mute pages and notifications of matching incidents for a while (their records still open)."""
    now = escalator.clock()
    starts = body.starts_at or now
    ends = body.ends_at or starts + timedelta(minutes=body.duration_minutes or 0)
    if ends <= now:
        raise invalid_request([{"field": "ends_at", "message": "the silence would already be over: it is in "
                                                              "the past"}])
    refusal = silence_refusal(who, body.matchers.community_id, ends - starts)
    if refusal is not None:
        raise refusal
    s = await escalator.create_silence(body.matchers.as_dict(), starts, ends, who.actor, body.comment)
    return _silence_out(s, now)


@router.get("/v1/silences", tags=["silences"])
async def list_silences(who: Reader, escalator: Escalation, active: bool = True,
                        limit: Limit = paging.DEFAULT_LIMIT, cursor: Cursor = None) -> SilenceList:
    """Silences over communities within your scope, newest first (those over every community: to identities
    whose scope is everything)."""
    found, total = await escalator.list_silences(
        active_only=active, scope=who.scope, after=paging.after(SILENCES, cursor), limit=limit + 1)
    now = escalator.clock()
    items = found[:limit]
    last = items[-1] if len(found) > limit else None
    return SilenceList(items=[_silence_out(s, now) for s in items], total=total,
                       next=paging.encode(SILENCES, last.created_at, last.id) if last and last.created_at else None)


@router.delete("/v1/silences/{silence_id}", tags=["silences"])
async def expire_silence(
    silence_id: str, who: Moderator, escalator: Escalation,
    actor: Annotated[str | None, Query(max_length=200, description=IGNORED)] = None,
) -> ExpiredSilence:
    """Expire a silence now (who expired it is kept). Again on an ended one: 200, `changed: false`."""
    try:
        s, changed = await escalator.expire_silence(silence_id, who.actor, scope=who.scope)
    except UnknownSilence:
        raise HTTPRefusal(404, f"no silence {silence_id}") from None
    return ExpiredSilence(**_silence_out(s, escalator.clock()).model_dump(), changed=changed)


# --- policy ------------------------------------------------------------------------------------------------


@router.get("/v1/policy", tags=["policy"])
async def policy(who: Reader, escalator: Escalation,
                 community_id: Annotated[str | None, Query(max_length=200)] = None) -> Response:
    """The policy in force: the defaults, or one community's merged policy (a community within your scope)."""
    if community_id is not None and not who.scope.allows(community_id):
        raise HTTPRefusal(404, f"no community {community_id!r} within your scope")
    p = escalator.policies
    body = p.community(community_id) if community_id else p.defaults
    return Response(content=body.model_dump_json(), media_type="application/json")
