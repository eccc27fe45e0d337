"""The escalation service: scored comments in; incidents, pages, field requests and the operator API out."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import Field

from services.escalation import api, metrics
from services.escalation.handlers import Escalator
from services.escalation.notifiers import EmailNotifier, NotificationLog, Notifier, WebhookNotifier
from services.escalation.policy import PolicyError, PolicyFile, load_policy
from terrain import telemetry
from terrain.access.api import PUBLIC as ACCESS_PUBLIC
from terrain.access.api import access_router
from terrain.runtime import ServiceRuntime
from terrain.settings import TerrainSettings
from terrain.topics import COMMENTS_SCORED

SERVICE = "escalation"

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
        "acknowledge, resolve, annotate and silence here. Also the access API: sign-in, keys, users, audit log.",
        public_routes=ACCESS_PUBLIC,
    )
    app.state.runtime = rt
    app.state.escalator = escalator
    # The routes join the app's own list rather than through include_router, which keeps an included router's
    # routes behind one opaque entry where the HTTP edge (route templates, public routes, body limits) and the
    # route-permission test would not see them. The access API (sign-in, keys, users, audit log) lives here.
    app.router.routes.extend([*api.router.routes, *access_router(settings, lambda: rt.pool, clock).routes])
    return app


def main() -> None:
    from terrain.runtime import configured, serve

    settings = configured(SERVICE, EscalationSettings)
    telemetry.configure_logging(settings, SERVICE)
    serve(configured(SERVICE, lambda: build_app(settings)), settings, settings.escalation_port)
