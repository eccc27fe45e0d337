"""The escalation service: scored comments in; incidents, the incident API and escalations out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

from services.escalation import domain
from services.escalation.handlers import Escalator, IllegalTransition, UnknownIncident
from terrain import telemetry
from terrain.contracts import IncidentEventType, IncidentLevel, IncidentSnapshot, IncidentState
from terrain.runtime import ServiceRuntime
from terrain.settings import TerrainSettings
from terrain.topics import COMMENTS_SCORED

SERVICE = "escalation"
DEFAULT_ACTOR = "api"

log = logging.getLogger("terrain.escalation")


class EscalationSettings(TerrainSettings):
    escalation_port: int = Field(default=8083, description="HTTP port of the escalation service.")
    escalation_cascade_threshold: int = Field(
        default=3, ge=1, description="Negative comments in one thread's incident that page a person."
    )
    escalation_ack_deadline_s: float = Field(
        default=900.0, gt=0, description="Time a paged person has to acknowledge an escalated incident."
    )
    escalation_private_reply_window_s: float = Field(
        default=7 * 24 * 3600.0, gt=0,
        description="How long after a comment its author can get a private reply (Meta: 7 days).",
    )
    escalation_min_confidence: float = Field(
        default=0.0, ge=0, le=1, description="Sentiment confidence a negative label needs to count."
    )
    escalation_flag_min_confidence: float = Field(
        default=0.5, ge=0, le=1, description="Confidence a charter flag needs before the playbook says hide."
    )
    escalation_evidence_limit: int = Field(
        default=10, ge=1, le=100, description="Recent evidence carried in incident snapshots and messages."
    )
    escalation_gauge_refresh_s: float = Field(
        default=15.0, gt=0, description="How often the open-incidents gauge is read from the database."
    )

    def policy(self) -> domain.Policy:
        return domain.Policy(
            cascade_threshold=self.escalation_cascade_threshold,
            ack_deadline=timedelta(seconds=self.escalation_ack_deadline_s),
            private_reply_window=timedelta(seconds=self.escalation_private_reply_window_s),
            min_confidence=self.escalation_min_confidence,
            flag_min_confidence=self.escalation_flag_min_confidence,
            evidence_limit=self.escalation_evidence_limit,
        )


class TransitionIn(BaseModel):
    """Who acknowledges or resolves, and an optional note for the timeline."""

    actor: str = Field(default=DEFAULT_ACTOR, min_length=1, max_length=200)
    note: str | None = Field(default=None, max_length=2000)


class IncidentList(BaseModel):
    items: list[IncidentSnapshot]


def build_app(
    settings: EscalationSettings | None = None,
    *,
    topic_overrides: dict[str, str] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FastAPI:
    settings = settings or EscalationSettings()
    rt = ServiceRuntime(
        SERVICE, settings, migrations_package="services.escalation", topic_overrides=topic_overrides
    )
    policy = settings.policy()
    escalator = Escalator(rt, policy, clock)
    rt.consumer(COMMENTS_SCORED, escalator.on_scored)

    async def _started() -> None:
        log.info("escalation policy", extra=dict(domain.policy_snapshot(policy)))
        escalator.start_gauge(settings.escalation_gauge_refresh_s)

    rt.on_started.append(_started)
    rt.on_stopping.append(escalator.stop_gauge)

    app = telemetry.build_http_app(
        service=SERVICE, health=rt.health, lifespan=rt.lifespan,
        description="Turns scored comments into incidents; acknowledge and resolve them here.",
    )
    app.state.runtime = rt
    app.state.escalator = escalator
    auth = telemetry.token_guard(settings)

    @app.get("/v1/incidents", dependencies=[Depends(auth)], tags=["incidents"])
    async def list_incidents(
        community_id: Annotated[str | None, Query(max_length=200)] = None,
        state: IncidentState | None = None,
        level: IncidentLevel | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> IncidentList:
        items = await escalator.list_incidents(
            community_id=community_id, state=state, level=level, limit=limit, offset=offset
        )
        return IncidentList(items=items)

    @app.get("/v1/incidents/{incident_id}", dependencies=[Depends(auth)], tags=["incidents"])
    async def get_incident(incident_id: str) -> dict[str, Any]:
        try:
            return await escalator.detail(incident_id)
        except UnknownIncident as exc:
            raise HTTPException(status_code=404, detail=f"no incident {incident_id}") from exc

    async def _transition(
        incident_id: str, event: IncidentEventType, body: TransitionIn | None
    ) -> IncidentSnapshot:
        body = body or TransitionIn()
        try:
            return await escalator.transition(incident_id, event, body.actor, body.note)
        except UnknownIncident as exc:
            raise HTTPException(status_code=404, detail=f"no incident {incident_id}") from exc
        except IllegalTransition as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc

    @app.post("/v1/incidents/{incident_id}/ack", dependencies=[Depends(auth)], tags=["incidents"])
    async def acknowledge(
        incident_id: str, body: Annotated[TransitionIn | None, Body()] = None
    ) -> IncidentSnapshot:
        return await _transition(incident_id, IncidentEventType.acknowledged, body)

    @app.post("/v1/incidents/{incident_id}/resolve", dependencies=[Depends(auth)], tags=["incidents"])
    async def resolve(
        incident_id: str, body: Annotated[TransitionIn | None, Body()] = None
    ) -> IncidentSnapshot:
        return await _transition(incident_id, IncidentEventType.resolved, body)

    return app


def main() -> None:
    from terrain.runtime import serve

    settings = EscalationSettings()
    telemetry.configure_logging(settings, SERVICE)
    serve(build_app(settings), settings, settings.escalation_port)
