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
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import Field, SecretStr

from services.ingest import meta, metrics
from services.ingest.domain import DEFAULT_SOURCES, InboundDraft, Limits, Reason, Refusal, parse_sources
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
        description="Dedup records unchanged for this long are pruned; keep it above any retry or replay window.",
    )
    ingest_prune_interval_s: float = Field(default=600.0, gt=0)
    ingest_prune_batch: int = Field(default=5000, ge=1)

    def limits(self) -> Limits:
        return Limits(max_text_chars=self.ingest_max_text_chars, sources=parse_sources(self.ingest_sources))


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than `limit` bytes without reading them all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def refusal_response(status: int, what: str, refusals: Sequence[Refusal]) -> JSONResponse:
    errors = [{"field": r.field or "(body)", "reason": r.reason.value, "message": r.message} for r in refusals]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:20])
    return JSONResponse(status_code=status, content={"detail": f"{what}: {summary}", "errors": errors})


def parse_json(body: bytes, content_type: str | None = None) -> Any | JSONResponse:
    """The decoded body, or a 400 that says where the JSON breaks (line and column).

    A body that is not JSON and says it is something else (a form, as `curl -d` sends by default) gets a 415
    naming the header instead: the body was not broken JSON, it was never meant to be JSON. A JSON body is
    read whatever its Content-Type says.
    """
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        media = (content_type or "").split(";")[0].strip().lower()
        if media and media != "application/json" and not media.endswith("+json"):
            return JSONResponse(
                status_code=415,
                content={"detail": f"the body must be JSON (Content-Type: application/json); it was sent as "
                                   f"{media} and does not read as JSON"},
            )
        return JSONResponse(
            status_code=400,
            content={"detail": f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                     "line": exc.lineno, "column": exc.colno},
        )
    except UnicodeDecodeError as exc:
        return JSONResponse(status_code=400, content={"detail": f"body is not UTF-8: {exc.reason}"})
    except RecursionError:
        return JSONResponse(status_code=400, content={"detail": "malformed JSON: nested too deeply"})


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
        service=SERVICE, health=rt.health, lifespan=rt.lifespan,
        description="Accepts comments (Meta webhooks, HTTP, the inbound topic) and publishes them, "
                    "deduplicated, to terrain.comments.v1.",
    )
    app.state.runtime = rt
    app.state.ingestor = ingestor
    app.state.pruner = pruner
    auth = telemetry.token_guard(settings)
    max_body = settings.ingest_max_body_bytes

    def too_large(channel: str) -> JSONResponse:
        metrics.REJECTED.labels(channel=channel, reason=Reason.too_large.value).inc()
        return JSONResponse(status_code=413, content={"detail": f"request body larger than {max_body} bytes"})

    @app.post("/v1/comments", status_code=202, dependencies=[Depends(auth)], tags=["comments"],
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"description": "One comment object (the inbound schema), or a list of them."}}}}})
    async def post_comments(request: Request) -> Response:
        received_at = time.perf_counter()
        try:
            body = await read_body(request, max_body)
        except BodyTooLarge:
            return too_large("http")
        decoded = parse_json(body, request.headers.get("content-type"))
        if isinstance(decoded, JSONResponse):
            metrics.REJECTED.labels(channel="http", reason=Reason.malformed_json.value).inc()
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
        try:
            body = await read_body(request, max_body)
        except BodyTooLarge:
            return too_large("webhook")
        check = meta.verify_signature(body, request.headers.get(meta.SIGNATURE_HEADER), app_secret)
        if check is not meta.SignatureCheck.ok:
            metrics.REJECTED.labels(channel="webhook", reason="bad_signature").inc()
            status = 401 if check is meta.SignatureCheck.missing else 403
            return JSONResponse(status_code=status, content={
                "detail": f"signature {check.value}: X-Hub-Signature-256 must be sha256=HMAC-SHA256(body, app secret)"})
        decoded = parse_json(body)
        if isinstance(decoded, JSONResponse):
            metrics.REJECTED.labels(channel="webhook", reason=Reason.malformed_json.value).inc()
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
