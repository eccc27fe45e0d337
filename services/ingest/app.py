"""The ingest service: Meta webhooks, `POST /v1/comments` and the inbound topic, to `terrain.comments.v1`.

`GET /webhooks/meta` answers Meta's subscription handshake; `POST /webhooks/meta` checks the
X-Hub-Signature-256 HMAC of the raw body before anything parses it, then stores the delivery's comments
and their outgoing messages in one PostgreSQL transaction (write-ahead through the outbox, see
handlers.py), publishes them, and answers 200 once the broker acknowledged them or after
`ingest_publish_wait_s` at most (the outbox relay sends what is left): a crash before that commit means no
200, so Meta retries, and the dedup records make the retry a no-op. The routes are in api.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from pydantic import Field, SecretStr

from services.ingest import api
from services.ingest.domain import DEFAULT_SOURCES, InboundDraft, Limits, parse_sources
from services.ingest.handlers import Ingestor, Pruner
from services.ingest.language import warm_up as warm_up_languages
from terrain import telemetry
from terrain.runtime import ServiceRuntime
from terrain.settings import TerrainSettings
from terrain.topics import COMMENTS_INBOUND

SERVICE = "ingest"


class IngestSettings(TerrainSettings):
    ingest_port: int = Field(default=8081, description="HTTP port of the ingest service.")
    meta_app_secret: SecretStr | None = Field(
        default=None, description="Meta app secret: checks X-Hub-Signature-256. Unset: the webhook answers 503."
    )
    meta_verify_token: SecretStr | None = Field(
        default=None, description="The verify token set in Meta's webhook configuration (hub.verify_token)."
    )
    ingest_sources: str = Field(
        default=",".join(DEFAULT_SOURCES), description="Known comment sources, comma-separated; others are refused."
    )
    ingest_max_body_bytes: int = Field(default=5_000_000, ge=1_000, description="Largest request body accepted.")
    ingest_max_text_chars: int = Field(
        default=20_000, ge=100, le=20_000, description="Longer texts are cut to this length and flagged."
    )
    ingest_max_comments_per_request: int = Field(default=1000, ge=1)
    ingest_max_changes_per_delivery: int = Field(
        default=1000, ge=1, description="Meta batches at most 1000 changes per delivery."
    )
    ingest_publish_wait_s: float = Field(
        default=2.0, gt=0, description="After commit, how long a request waits for the broker before answering."
    )
    ingest_dedup_retention_days: float = Field(
        default=30.0, gt=0,
        description="Content hashes of comments unchanged for this long are pruned (a repost after that reads as "
                    "an edit); keep it above any retry or replay window. Each comment keeps its row without the "
                    "hash (ids, revision, version time: about 210 bytes with its index) for good, so a replayed "
                    "Meta add or an older edit is never published again.",
    )
    ingest_prune_interval_s: float = Field(default=600.0, gt=0)
    ingest_prune_batch: int = Field(default=5000, ge=1)
    ingest_max_future_skew_s: float = Field(
        default=86_400.0, ge=0, le=31_536_000,
        description="Comments dated more than this many seconds after the time they arrive are refused "
                    "(future_timestamp): clocks drift by seconds, a date days ahead is a producer's bug.",
    )

    def limits(self) -> Limits:
        return Limits(max_text_chars=self.ingest_max_text_chars, sources=parse_sources(self.ingest_sources),
                      max_future_skew=timedelta(seconds=self.ingest_max_future_skew_s))


def build_app(
    settings: IngestSettings | None = None,
    *,
    topic_overrides: dict[str, str] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FastAPI:
    settings = settings or IngestSettings()
    rt = ServiceRuntime(SERVICE, settings, migrations_package="services.ingest", topic_overrides=topic_overrides)
    ingestor = Ingestor(rt, clock, settings.limits(), publish_wait_s=settings.ingest_publish_wait_s)
    # Read leniently, so an over-long text is truncated and flagged rather than dead-lettered.
    rt.consumer(dataclasses.replace(COMMENTS_INBOUND, model=InboundDraft), ingestor.on_inbound)
    pruner = Pruner(rt, clock, settings.ingest_dedup_retention_days, settings.ingest_prune_batch,
                    settings.ingest_prune_interval_s)

    async def on_started() -> None:
        # The language model (seconds to load on a busy machine) loads before the service says it is
        # ready, not in the first webhook request, which Meta would see as slow.
        await asyncio.to_thread(warm_up_languages)
        await ingestor.publisher.start()
        pruner.start()

    async def on_stopping() -> None:
        await pruner.stop()
        await ingestor.drain()
        await ingestor.publisher.stop()

    rt.on_started.append(on_started)
    rt.on_stopping.append(on_stopping)

    app = telemetry.build_http_app(
        pool=rt.pool_or_none,
        service=SERVICE, settings=settings, health=rt.health, lifespan=rt.lifespan,
        description="Accepts comments (Meta webhooks, HTTP, the inbound topic) and publishes them, "
                    "deduplicated, to terrain.comments.v1.",
        public_routes={"/webhooks/meta": "Meta signs each delivery: X-Hub-Signature-256, an HMAC of the body "
                                         "checked before the body is parsed"},
        max_body_bytes={"/v1/comments": settings.ingest_max_body_bytes,
                        "/webhooks/meta": settings.ingest_max_body_bytes},
    )
    app.state.runtime = rt
    app.state.ingestor = ingestor
    app.state.pruner = pruner
    app.state.ingest_api = api.IngestApi(
        ingestor=ingestor,
        max_comments_per_request=settings.ingest_max_comments_per_request,
        max_changes_per_delivery=settings.ingest_max_changes_per_delivery,
        verify_token=settings.meta_verify_token.get_secret_value() if settings.meta_verify_token else None,
        app_secret=settings.meta_app_secret.get_secret_value() if settings.meta_app_secret else None,
    )
    # The routes join the app's own list rather than through include_router, which keeps an included router's
    # routes behind one opaque entry where the HTTP edge (route templates, public routes, body limits) and the
    # route-permission test would not see them.
    app.router.routes.extend([*api.router.routes, *api.webhooks.routes])
    return app


def main() -> None:
    from terrain.runtime import configured, serve

    settings = configured(SERVICE, IngestSettings)
    telemetry.configure_logging(settings, SERVICE)
    serve(configured(SERVICE, lambda: build_app(settings)), settings, settings.ingest_port)
