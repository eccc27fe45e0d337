"""The escalation service: scored comments in; incidents, pages, field requests and the operator API out."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from fastapi import Body, Depends, FastAPI, HTTPException, Query, Response
from pydantic import BaseModel, Field, model_validator

from services.escalation import metrics
from services.escalation.domain import Silence
from services.escalation.handlers import Escalator, IllegalTransition, UnknownIncident, UnknownSilence
from services.escalation.notifiers import EmailNotifier, NotificationLog, Notifier, WebhookNotifier
from services.escalation.policy import PolicyError, PolicyFile, load_policy
from terrain import http, telemetry
from terrain.contracts import IncidentEventType, IncidentLevel, IncidentSnapshot, IncidentState
from terrain.contracts.base import AwareDatetime, Identifier
from terrain.runtime import ServiceRuntime
from terrain.settings import TerrainSettings
from terrain.topics import COMMENTS_SCORED

SERVICE = "escalation"
DEFAULT_ACTOR = "api"

log = logging.getLogger("terrain.escalation")


class EscalationSettings(TerrainSettings):
    escalation_port: int = Field(default=8083, description="HTTP port of the escalation service.")
    escalation_policy_file: str | None = Field(
        default=None, description="YAML or JSON policy file; reloaded when it changes. Unset: built-in defaults."
    )
    escalation_policy_reload_s: float = Field(default=5.0, gt=0, description="How often the file is checked.")
    # Shortcuts over the built-in defaults for a run without a policy file.
    escalation_cascade_threshold: int | None = Field(
        default=None, ge=1, description="Sure negatives in one thread's window that page a person."
    )
    escalation_ack_deadline_s: float | None = Field(
        default=None, gt=0, description="Time a paged person has to acknowledge (the first step's wait)."
    )
    escalation_min_confidence: float | None = Field(
        default=None, ge=0, le=1, description="Sentiment confidence a negative needs to count."
    )
    escalation_timer_interval_s: float = Field(default=1.0, gt=0, description="How often due timers are fired.")
    escalation_retention_s: float = Field(
        default=30 * 86400.0, gt=0,
        description="Per-comment and per-bucket detection state older than this is pruned.",
    )
    escalation_prune_interval_s: float = Field(default=600.0, gt=0)
    escalation_gauge_refresh_s: float = Field(
        default=15.0, gt=0, description="How often the open-incidents gauge is read from the database."
    )
    escalation_notify_interval_s: float = Field(default=1.0, gt=0, description="How often due notifications go.")
    escalation_webhook_secret: str | None = Field(
        default=None, description="Signs webhook bodies (X-Terrain-Signature: sha256=HMAC)."
    )
    escalation_smtp_host: str | None = Field(default=None, description="SMTP server for e-mail notifications.")
    escalation_smtp_port: int = 25
    escalation_smtp_sender: str = "terrain@localhost"
    escalation_smtp_username: str | None = None
    escalation_smtp_password: str | None = None
    escalation_smtp_starttls: bool = False

    def policies(self) -> PolicyFile:
        base = load_policy(self.escalation_policy_file) if self.escalation_policy_file else PolicyFile()
        d = base.defaults
        updates: dict[str, Any] = {}
        if self.escalation_cascade_threshold is not None:
            updates["cascade"] = d.cascade.model_copy(update={"min_negatives": self.escalation_cascade_threshold})
        if self.escalation_min_confidence is not None:
            updates["respond"] = d.respond.model_copy(update={"min_confidence": self.escalation_min_confidence})
        if self.escalation_ack_deadline_s is not None and d.steps:
            first = d.steps[0].model_copy(update={"wait": timedelta(seconds=self.escalation_ack_deadline_s)})
            updates["steps"] = [first, *d.steps[1:]]
        if not updates:
            return base
        return base.model_copy(update={"defaults": d.model_copy(update=updates)})


class PolicyReloader:
    """Reloads the policy file when its modification time changes; a bad file keeps the last good one."""

    def __init__(self, settings: EscalationSettings, apply: Callable[[PolicyFile], None]) -> None:
        self.settings = settings
        self.apply = apply
        self.path = Path(settings.escalation_policy_file) if settings.escalation_policy_file else None
        self._mtime = self._stat()

    def _stat(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime if self.path else None
        except OSError:
            return None

    def __call__(self) -> None:
        mtime = self._stat()
        if self.path is None or mtime is None or mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            policies = self.settings.policies()
        except PolicyError as exc:
            metrics.POLICY_RELOADS.labels(outcome="refused").inc()
            log.error("policy file refused, keeping the previous one: %s", exc)
            return
        self.apply(policies)
        metrics.POLICY_RELOADS.labels(outcome="loaded").inc()
        log.info("policy file reloaded", extra={"path": str(self.path)})


class TransitionIn(BaseModel):
    """Who acknowledges or resolves, and an optional note for the timeline."""

    actor: str = Field(default=DEFAULT_ACTOR, min_length=1, max_length=200)
    note: str | None = Field(default=None, max_length=2000)


class NoteIn(BaseModel):
    actor: str = Field(default=DEFAULT_ACTOR, min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=5000)


class IncidentList(BaseModel):
    items: list[IncidentSnapshot]


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
    created_by: str = Field(min_length=1, max_length=200)
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
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    expired_at: datetime | None
    active: bool


class SilenceList(BaseModel):
    items: list[SilenceOut]


def _silence_out(s: Silence, now: datetime) -> SilenceOut:
    return SilenceOut(
        id=s.id, matchers=dict(s.matchers), starts_at=s.starts_at, ends_at=s.ends_at, created_by=s.created_by,
        comment=s.comment, expired_at=s.expired_at, active=s.active(now),
    )


def build_notifiers(settings: EscalationSettings) -> dict[str, Notifier]:
    out: dict[str, Notifier] = {"webhook": WebhookNotifier(secret=settings.escalation_webhook_secret)}
    if settings.escalation_smtp_host:
        out["email"] = EmailNotifier(
            host=settings.escalation_smtp_host, port=settings.escalation_smtp_port,
            sender=settings.escalation_smtp_sender, username=settings.escalation_smtp_username,
            password=settings.escalation_smtp_password, starttls=settings.escalation_smtp_starttls,
        )
    return out


def build_app(
    settings: EscalationSettings | None = None,
    *,
    topic_overrides: dict[str, str] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    policies: PolicyFile | None = None,
) -> FastAPI:
    settings = settings or EscalationSettings()
    rt = ServiceRuntime(
        SERVICE, settings, migrations_package="services.escalation", topic_overrides=topic_overrides
    )
    escalator = Escalator(rt, policies or settings.policies(), clock)
    rt.consumer(COMMENTS_SCORED, escalator.on_scored)
    reloader = PolicyReloader(settings, escalator.use_policies) if policies is None else None
    notifiers = build_notifiers(settings)

    async def _started() -> None:
        escalator.notifications = NotificationLog(rt.pool, notifiers, clock=clock)
        escalator.notifications.start(interval_s=settings.escalation_notify_interval_s)
        d = escalator.policies.defaults
        log.info(
            "escalation policy",
            extra={"file": settings.escalation_policy_file or "(built-in)", "communities": len(
                escalator.policies.communities), "respond_min_confidence": d.respond.min_confidence,
                "cascade_min_negatives": d.cascade.min_negatives, "steps": len(d.steps)},
        )
        escalator.start(
            gauge_s=settings.escalation_gauge_refresh_s, timers_s=settings.escalation_timer_interval_s,
            prune_s=settings.escalation_prune_interval_s,
            retention=timedelta(seconds=settings.escalation_retention_s),
            reload=reloader, reload_s=settings.escalation_policy_reload_s,
        )

    async def _stopping() -> None:
        await escalator.stop()
        if escalator.notifications is not None:
            await escalator.notifications.stop()
        for n in notifiers.values():
            await n.aclose()  # type: ignore[attr-defined]

    rt.on_started.append(_started)
    rt.on_stopping.append(_stopping)

    app = telemetry.build_http_app(
        pool=rt.pool_or_none,
        service=SERVICE, settings=settings, health=rt.health, lifespan=rt.lifespan,
        description="Turns scored comments into incidents, pages people by policy and asks for field visits; "
        "acknowledge, resolve, annotate and silence here.",
    )
    app.state.runtime = rt
    app.state.escalator = escalator
    auth = telemetry.token_guard(settings)

    @app.get("/v1/incidents", dependencies=[Depends(auth)], tags=["incidents"])
    async def list_incidents(
        community_id: Annotated[str | None, Query(max_length=200)] = None,
        state: IncidentState | None = None,
        level: IncidentLevel | None = None,
        # A filter, not a stored time: any instant with an offset will do ("since 2999": nothing yet).
        since: Annotated[pydantic.AwareDatetime | None, Query(description="Updated at or after (ISO 8601).")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> IncidentList:
        items = await escalator.list_incidents(
            community_id=community_id, state=state, level=level, since=since, limit=limit, offset=offset
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

    @app.post("/v1/incidents/{incident_id}/notes", dependencies=[Depends(auth)], tags=["incidents"],
              status_code=201)
    async def add_note(incident_id: str, body: NoteIn) -> dict[str, Any]:
        try:
            return await escalator.add_note(incident_id, body.actor, body.text)
        except UnknownIncident as exc:
            raise HTTPException(status_code=404, detail=f"no incident {incident_id}") from exc

    @app.post("/v1/silences", dependencies=[Depends(auth)], tags=["silences"], status_code=201)
    async def create_silence(body: SilenceIn) -> SilenceOut:
        now = clock()
        starts = body.starts_at or now
        ends = body.ends_at or starts + timedelta(minutes=body.duration_minutes or 0)
        if ends <= now:
            raise http.invalid_request([{"field": "ends_at", "message": "the silence would already be over: it is in "
                                                                  "the past"}])
        s = await escalator.create_silence(body.matchers.as_dict(), starts, ends, body.created_by, body.comment)
        return _silence_out(s, now)

    @app.get("/v1/silences", dependencies=[Depends(auth)], tags=["silences"])
    async def list_silences(active: bool = True) -> SilenceList:
        now = clock()
        return SilenceList(items=[_silence_out(s, now) for s in await escalator.list_silences(active_only=active)])

    @app.delete("/v1/silences/{silence_id}", dependencies=[Depends(auth)], tags=["silences"])
    async def expire_silence(
        silence_id: str, actor: Annotated[str, Query(min_length=1, max_length=200)] = DEFAULT_ACTOR
    ) -> SilenceOut:
        """Expire a silence now (who expired it is kept)."""
        try:
            s = await escalator.expire_silence(silence_id, actor)
        except UnknownSilence as exc:
            raise HTTPException(status_code=404, detail=f"no silence {silence_id}") from exc
        except IllegalTransition as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        return _silence_out(s, clock())

    @app.get("/v1/policy", dependencies=[Depends(auth)], tags=["policy"])
    async def policy(community_id: Annotated[str | None, Query(max_length=200)] = None) -> Response:
        """The policy in force: the defaults, or one community's merged policy."""
        p = escalator.policies
        body = p.community(community_id) if community_id else p.defaults
        return Response(content=body.model_dump_json(), media_type="application/json")

    return app


def main() -> None:
    from terrain.runtime import configured, serve

    settings = configured(SERVICE, EscalationSettings)
    telemetry.configure_logging(settings, SERVICE)
    serve(configured(SERVICE, lambda: build_app(settings)), settings, settings.escalation_port)
