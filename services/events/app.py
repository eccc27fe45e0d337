"""The events service: `/v1/events` (log, plan, schedule, close, impact), the outcomes topic, field-visit
escalations and engagement from scored comments, stored in PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from pydantic import Field

from services.events import api
from services.events.handlers import EventLog
from terrain import telemetry
from terrain.runtime import ServiceRuntime
from terrain.settings import TerrainSettings
from terrain.topics import COMMENTS_SCORED, ESCALATIONS, EVENTS_OUTCOMES

SERVICE = "events"


class EventsSettings(TerrainSettings):
    events_port: int = Field(default=8084, description="HTTP port of the events service.")
    events_retention_days: int = Field(
        default=120, ge=30, description="Days of per-comment engagement facts kept; daily rollups are kept."
    )
    events_upkeep_interval_s: float = Field(
        default=15.0, gt=0, description="How often the retention runs and the gauges are refreshed."
    )
    events_schedule_grace_s: float = Field(
        default=300.0, ge=0, le=86_400,
        description=("How far in the past an event may still be scheduled over HTTP; an earlier start is refused "
                     "(422 naming starts_at)."),
    )


def build_app(
    settings: EventsSettings | None = None,
    *,
    topic_overrides: dict[str, str] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FastAPI:
    settings = settings or EventsSettings()
    rt = ServiceRuntime(SERVICE, settings, migrations_package="services.events", topic_overrides=topic_overrides)
    events = EventLog(rt, clock, retention_days=settings.events_retention_days,
                      schedule_grace=timedelta(seconds=settings.events_schedule_grace_s))
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
    # The routes (services/events/api.py, each with its permission) join the app's own list rather than through
    # include_router, which keeps an included router's routes behind one opaque entry where the HTTP edge (route
    # templates, public routes, body limits) and the route-permission test would not see them.
    app.router.routes.extend(api.router.routes)
    return app


def main() -> None:
    from terrain.runtime import configured, serve

    settings = configured(SERVICE, EventsSettings)
    telemetry.configure_logging(settings, SERVICE)
    serve(configured(SERVICE, lambda: build_app(settings)), settings, settings.events_port)
