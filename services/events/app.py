"""The events service: `/v1/events` (log, plan, schedule, close, impact), the outcomes topic, field-visit
escalations and engagement from scored comments, stored in PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.events.domain import CANCELLED, Change, Merged, Refusal, RefusalKind
from services.events.handlers import EventLog
from services.events.visits import Action
from terrain import http, telemetry
from terrain.contracts import EventIn, EventOutcome
from terrain.contracts.base import AwareDatetime
from terrain.contracts.events import EVENT_KINDS, PENDING, EventStatus
from terrain.runtime import ServiceRuntime
from terrain.settings import TerrainSettings
from terrain.topics import COMMENTS_SCORED, ESCALATIONS, EVENTS_OUTCOMES

SERVICE = "events"
KIND_PATTERN = "^(" + "|".join(EVENT_KINDS) + ")$"
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
Note = Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class EventsSettings(TerrainSettings):
    events_port: int = Field(default=8084, description="HTTP port of the events service.")
    events_retention_days: int = Field(
        default=120, ge=30, description="Days of per-comment engagement facts kept; daily rollups are kept."
    )
    events_upkeep_interval_s: float = Field(
        default=15.0, gt=0, description="How often the retention runs and the gauges are refreshed."
    )


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actor: Name = Field(description="Who does it; kept with the transition.")
    note: Note | None = None


class ScheduleIn(_Command):
    starts_at: AwareDatetime = Field(description="When the visit or event will take place.")
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


def _refused(refusal: Refusal) -> JSONResponse:
    status = {RefusalKind.conflict: 409, RefusalKind.missing: 404}.get(refusal.kind, 422)
    errors = [{"field": refusal.field, "message": refusal.reason}]
    return http.invalid_request(errors, what="event refused", status_code=status).response()


def _answer(result: Merged | Refusal, response: Response) -> Any:
    if isinstance(result, Refusal):
        return _refused(result)
    if result.change is Change.unchanged:
        response.headers["X-Terrain-Change"] = "unchanged"
    return result.event.model_dump(mode="json")


def build_app(
    settings: EventsSettings | None = None,
    *,
    topic_overrides: dict[str, str] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FastAPI:
    settings = settings or EventsSettings()
    rt = ServiceRuntime(SERVICE, settings, migrations_package="services.events", topic_overrides=topic_overrides)
    events = EventLog(rt, clock, retention_days=settings.events_retention_days)
    rt.consumer(EVENTS_OUTCOMES, events.on_outcomes)
    # Own groups: one group per subscriber keeps rebalances of one stream from pausing the others.
    rt.consumer(ESCALATIONS, events.on_escalations, group_id=rt.group("escalations"))
    rt.consumer(COMMENTS_SCORED, events.on_scored, group_id=rt.group("engagement"))

    async def _start_upkeep() -> None:
        events.start_maintenance(settings.events_upkeep_interval_s)

    rt.on_started.append(_start_upkeep)
    rt.on_stopping.append(events.stop_maintenance)

    app = telemetry.build_http_app(
        pool=rt.pool_or_none,
        service=SERVICE,
        settings=settings,
        health=rt.health,
        lifespan=rt.lifespan,
        description=(
            "Logs in-real-life events and field visits with their outcomes, tracks field visits from escalation"
            " to outcome, and measures an event's impact on its community's engagement."
        ),
    )
    app.state.runtime = rt
    app.state.events = events
    auth = telemetry.token_guard(settings)

    @app.post(
        "/v1/events",
        status_code=201,
        dependencies=[Depends(auth)],
        tags=["events"],
        responses={
            200: {"description": "An event with this id existed: the write was merged into it."},
            409: {"description": "The id belongs to an event of another community, or the status move is not allowed."},
        },
    )
    async def post_event(event: EventIn, response: Response) -> Any:
        result = await events.log(event)
        if isinstance(result, Refusal):
            return _refused(result)
        if result.change is not Change.created:
            response.status_code = 200
        return result.event.model_dump(mode="json")

    @app.get("/v1/events", dependencies=[Depends(auth)], tags=["events"])
    async def list_events(
        community_id: str | None = None,
        kind: Annotated[str | None, Query(pattern=KIND_PATTERN)] = None,
        incident_id: str | None = None,
        status: EventStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        items = await events.find(
            community_id=community_id,
            kind=kind,
            incident_id=incident_id,
            status=status.value if status else None,
            limit=limit,
            offset=offset,
        )
        return {"items": [e.model_dump(mode="json") for e in items]}

    @app.get("/v1/events/{event_id}", dependencies=[Depends(auth)], tags=["events"])
    async def get_event(event_id: str) -> dict[str, Any]:
        event = await events.get(event_id)
        if event is None:
            raise HTTPException(status_code=404, detail=f"no event with id {event_id}")
        return event.model_dump(mode="json")

    @app.get("/v1/events/{event_id}/history", dependencies=[Depends(auth)], tags=["field visits"])
    async def get_history(event_id: str) -> dict[str, Any]:
        """Every lifecycle step of the event, oldest first, with who and when."""
        if await events.get(event_id) is None:
            raise HTTPException(status_code=404, detail=f"no event with id {event_id}")
        items = await events.history(event_id)
        return {"items": [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in i.items()} for i in items]}

    @app.post("/v1/events/{event_id}/schedule", dependencies=[Depends(auth)], tags=["field visits"])
    async def schedule(event_id: str, body: ScheduleIn, response: Response) -> Any:
        """Set (or move) the date, and optionally who goes: requested → scheduled."""
        changes = {"starts_at": body.starts_at, "ends_at": body.ends_at, "assignee": body.assignee}
        return _answer(await events.act(event_id, Action.schedule, changes, body.actor, body.note), response)

    @app.post("/v1/events/{event_id}/assign", dependencies=[Depends(auth)], tags=["field visits"])
    async def assign(event_id: str, body: AssignIn, response: Response) -> Any:
        """Name who goes, without changing the status."""
        return _answer(
            await events.act(event_id, Action.assign, {"assignee": body.assignee}, body.actor, body.note), response
        )

    @app.post("/v1/events/{event_id}/close", dependencies=[Depends(auth)], tags=["field visits"])
    async def close(event_id: str, body: CloseIn, response: Response) -> Any:
        """It took place: → done, with the outcome (attendance, ambassadors met, notes, result) and follow-ups."""
        if body.outcome.result in (PENDING, CANCELLED):
            return _refused(Refusal(
                RefusalKind.invalid, "outcome.result",
                "closing needs a decided result (success, mixed, failure, resolved, improved, unchanged, worse);"
                " use /cancel for an event that did not take place",
            ))
        changes = {"outcome": body.outcome, "follow_ups": body.follow_ups, "starts_at": body.starts_at,
                   "ends_at": body.ends_at}
        return _answer(await events.act(event_id, Action.complete, changes, body.actor, body.note), response)

    @app.post("/v1/events/{event_id}/cancel", dependencies=[Depends(auth)], tags=["field visits"])
    async def cancel(event_id: str, body: CancelIn, response: Response) -> Any:
        """It will not take place: → cancelled, with why."""
        return _answer(await events.act(event_id, Action.cancel, {}, body.actor, body.note), response)

    @app.get("/v1/events/{event_id}/impact", dependencies=[Depends(auth)], tags=["impact"])
    async def get_impact(
        event_id: str, window_days: Annotated[int, Query(ge=3, le=90)] = 14
    ) -> dict[str, Any]:
        """The community's engagement after vs before the event and, when comparable communities without an
        event exist, a difference-in-differences estimate with its confidence interval; plus what could not
        be concluded."""
        report = await events.impact(event_id, window_days)
        if report is None:
            raise HTTPException(status_code=404, detail=f"no event with id {event_id}")
        return report.as_dict()

    return app


def main() -> None:
    from terrain.runtime import configured, serve

    settings = configured(SERVICE, EventsSettings)
    telemetry.configure_logging(settings, SERVICE)
    serve(configured(SERVICE, lambda: build_app(settings)), settings, settings.events_port)
