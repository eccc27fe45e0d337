"""The events service: `/v1/events`, the outcomes topic and field-visit escalations, stored in PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from services.events.domain import Change, Refusal, RefusalKind
from services.events.handlers import EventLog
from terrain import telemetry
from terrain.contracts import EventIn
from terrain.runtime import ServiceRuntime
from terrain.settings import TerrainSettings
from terrain.topics import ESCALATIONS, EVENTS_OUTCOMES

SERVICE = "events"
KIND_PATTERN = r"^(meetup|apero|field_visit|workshop|other)$"


class EventsSettings(TerrainSettings):
    events_port: int = Field(default=8084, description="HTTP port of the events service.")


def _refused(refusal: Refusal) -> JSONResponse:
    status = 409 if refusal.kind is RefusalKind.conflict else 422
    return JSONResponse(
        status_code=status,
        content={
            "detail": f"event refused: {refusal.field}: {refusal.reason}",
            "errors": [{"field": refusal.field, "message": refusal.reason}],
        },
    )


def build_app(
    settings: EventsSettings | None = None,
    *,
    topic_overrides: dict[str, str] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FastAPI:
    settings = settings or EventsSettings()
    rt = ServiceRuntime(SERVICE, settings, migrations_package="services.events", topic_overrides=topic_overrides)
    events = EventLog(rt, clock)
    rt.consumer(EVENTS_OUTCOMES, events.on_outcomes)
    # Its own group: one group per subscriber keeps rebalances of one stream from pausing the other.
    rt.consumer(ESCALATIONS, events.on_escalations, group_id=rt.group("escalations"))

    app = telemetry.build_http_app(
        service=SERVICE,
        health=rt.health,
        lifespan=rt.lifespan,
        description="Logs in-real-life events and field visits with their outcomes, linked to incidents.",
    )
    app.state.runtime = rt
    auth = telemetry.token_guard(settings)

    @app.post(
        "/v1/events",
        status_code=201,
        dependencies=[Depends(auth)],
        tags=["events"],
        responses={
            200: {"description": "An event with this id existed: the write was merged into it."},
            409: {"description": "The id belongs to an event of another community."},
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
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        items = await events.find(
            community_id=community_id, kind=kind, incident_id=incident_id, limit=limit, offset=offset
        )
        return {"items": [e.model_dump(mode="json") for e in items]}

    @app.get("/v1/events/{event_id}", dependencies=[Depends(auth)], tags=["events"])
    async def get_event(event_id: str) -> dict[str, Any]:
        event = await events.get(event_id)
        if event is None:
            raise HTTPException(status_code=404, detail=f"no event with id {event_id}")
        return event.model_dump(mode="json")

    return app


def main() -> None:
    from terrain.runtime import serve

    settings = EventsSettings()
    telemetry.configure_logging(settings, SERVICE)
    serve(build_app(settings), settings, settings.events_port)
