"""The ingest service: Meta webhooks, `POST /v1/comments` and the inbound topic, to `terrain.comments.v1`.

`GET /webhooks/meta` answers Meta's subscription handshake; `POST /webhooks/meta` checks the
X-Hub-Signature-256 HMAC of the raw body before anything parses it, then stores the delivery's comments
and their outgoing messages in one PostgreSQL transaction (write-ahead through the outbox, see
handlers.py), publishes them, and answers 200 once the broker acknowledged them or after
`ingest_publish_wait_s` at most (the outbox relay sends what is left): a crash before that commit means no
200, so Meta retries, and the dedup records make the retry a no-op.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import Field, SecretStr

from services.ingest import meta, metrics
from services.ingest.domain import DEFAULT_SOURCES, InboundDraft, Limits, Reason, Refusal, parse_sources
from services.ingest.handlers import Ingestor, Pruner
from services.ingest.language import warm_up as warm_up_languages
from terrain import http, telemetry
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


def refusal_response(status: int, what: str, refusals: Sequence[Refusal]) -> JSONResponse:
    errors = [{"field": r.field or "(body)", "reason": r.reason.value, "message": r.message} for r in refusals]
    return http.invalid_request(errors, what=what, status_code=status).response()


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
    auth = telemetry.token_guard(settings)

    def decoded_or_refusal(body: bytes, channel: str) -> Any:
        try:
            return http.decode_json(body)
        except http.HTTPRefusal as refusal:
            metrics.REJECTED.labels(channel=channel, reason=Reason.malformed_json.value).inc()
            return refusal.response()

    @app.post("/v1/comments", status_code=202, dependencies=[Depends(auth)], tags=["comments"],
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"description": "One comment object (the inbound schema), or a list of them."}}}}})
    async def post_comments(request: Request) -> Response:
        received_at = time.perf_counter()
        # The edge middleware has checked the token, the type and the size before this body was read.
        decoded = decoded_or_refusal(await request.body(), "http")
        if isinstance(decoded, JSONResponse):
            return decoded
        n = len(decoded) if isinstance(decoded, list) else 1
        metrics.RECEIVED.labels(channel="http").inc(n)
        if isinstance(decoded, list) and not decoded:
            return refusal_response(422, "invalid comment", [Refusal(Reason.invalid, None, "the list is empty")])
        if n > settings.ingest_max_comments_per_request:
            metrics.REJECTED.labels(channel="http", reason=Reason.too_large.value).inc()
            return JSONResponse(status_code=413, content={
                "detail": f"too many comments in one request: {n} > {settings.ingest_max_comments_per_request}"})
        screened = ingestor.screen_body(decoded)
        refusals = [r for r in screened if isinstance(r, Refusal)]
        if refusals:
            ingestor.refused("http", refusals)
            return refusal_response(422, "invalid comment", refusals)
        items = [i for i in screened if not isinstance(i, Refusal)]
        accepted = await ingestor.accept(items, "http", received_at=received_at)
        new = sum(a.outcome.value != "duplicate" for a in accepted)
        return JSONResponse(status_code=202, content={
            "accepted": new,
            "duplicates": len(items) - new,
            "items": [{"comment_id": a.comment_id, "outcome": a.outcome.value, "revision": a.revision}
                      for a in accepted],
        })

    verify_token = settings.meta_verify_token.get_secret_value() if settings.meta_verify_token else None
    app_secret = settings.meta_app_secret.get_secret_value() if settings.meta_app_secret else None

    @app.get("/webhooks/meta", tags=["webhooks"], response_class=PlainTextResponse)
    async def meta_handshake(request: Request) -> Response:
        """Meta's subscription check: echo hub.challenge when hub.verify_token is ours."""
        challenge = meta.handshake(request.query_params, verify_token)
        if challenge is None:
            return PlainTextResponse("verification failed: wrong hub.mode or hub.verify_token", status_code=403)
        return PlainTextResponse(challenge)

    @app.post("/webhooks/meta", tags=["webhooks"])
    async def meta_delivery(request: Request) -> Response:
        """A signed Meta delivery: 200 once its comments are committed and published (or the wait is over)."""
        received_at = time.perf_counter()
        if app_secret is None:
            return JSONResponse(status_code=503,
                                content={"detail": "webhook not configured: set TERRAIN_META_APP_SECRET"})
        body = await request.body()
        check = meta.verify_signature(body, request.headers.get(meta.SIGNATURE_HEADER), app_secret)
        if check is not meta.SignatureCheck.ok:
            metrics.REJECTED.labels(channel="webhook", reason="bad_signature").inc()
            status = 401 if check is meta.SignatureCheck.missing else 403
            return JSONResponse(status_code=status, content={
                "detail": f"signature {check.value}: X-Hub-Signature-256 must be sha256=HMAC-SHA256(body, app secret)"})
        decoded = decoded_or_refusal(body, "webhook")
        if isinstance(decoded, JSONResponse):
            return decoded
        changes = meta.count_changes(decoded)
        if changes > settings.ingest_max_changes_per_delivery:
            metrics.REJECTED.labels(channel="webhook", reason=Reason.too_large.value).inc()
            return JSONResponse(status_code=413, content={
                "detail": f"too many changes in one delivery: {changes} > {settings.ingest_max_changes_per_delivery}"})
        result = await ingestor.on_meta_delivery(decoded, received_at)
        if isinstance(result, Refusal):
            ingestor.refused("webhook", [result])
            return refusal_response(422, "invalid delivery", [result])
        return JSONResponse(status_code=200, content=result)

    return app


def main() -> None:
    from terrain.runtime import configured, serve

    settings = configured(SERVICE, IngestSettings)
    telemetry.configure_logging(settings, SERVICE)
    serve(configured(SERVICE, lambda: build_app(settings)), settings, settings.ingest_port)
