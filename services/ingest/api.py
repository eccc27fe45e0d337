"""Ingest's HTTP routes: `POST /v1/comments` (the publish permission, every comment in the caller's scope) and
Meta's webhook (public: Meta signs each delivery with an HMAC of its body).

`build_app` adds the routes of `router` (behind the bearer credential) and `webhooks` (public) to its app and
hands them what they use through `app.state.ingest_api` (an `IngestApi`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from services.ingest import meta, metrics
from services.ingest.domain import Incoming, Reason, Refusal
from services.ingest.handlers import Ingestor
from terrain import http
from terrain.access.deps import Publisher, api_router, out_of_scope
from terrain.access.model import Scope


@dataclass(frozen=True)
class IngestApi:
    """What the routes work with, made once by `build_app`."""

    ingestor: Ingestor
    max_comments_per_request: int
    max_changes_per_delivery: int
    verify_token: str | None
    app_secret: str | None


def ingest_api(request: Request) -> IngestApi:
    api: IngestApi = request.app.state.ingest_api
    return api


Api = Annotated[IngestApi, Depends(ingest_api)]

router = api_router()
webhooks = APIRouter(route_class=http.JsonBodyRoute)


def refusal_response(status: int, what: str, refusals: Sequence[Refusal]) -> JSONResponse:
    errors = [{"field": r.field or "(body)", "reason": r.reason.value, "message": r.message} for r in refusals]
    return http.invalid_request(errors, what=what, status_code=status).response()


def decoded_or_refusal(body: bytes, channel: str) -> Any:
    try:
        return http.decode_json(body)
    except http.HTTPRefusal as refusal:
        metrics.REJECTED.labels(channel=channel, reason=Reason.malformed_json.value).inc()
        return refusal.response()


def first_outside(items: Sequence[Incoming], scope: Scope) -> str | None:
    """The first community of these comments the scope does not hold, else None."""
    return next((i.comment.community_id for i in items if not scope.allows(i.comment.community_id)), None)


@router.post("/v1/comments", status_code=202, tags=["comments"],
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"description": "One comment object (the inbound schema), or a list of them."}}}}})
async def post_comments(request: Request, who: Publisher, api: Api) -> Response:
    """Comments from another system (roles service and admin). Every comment must belong to a community of the
    caller's scope: one that does not refuses the whole request (403 naming it) before anything is stored."""
    received_at = time.perf_counter()
    # The edge middleware has checked the credential, the type and the size before this body was read.
    decoded = decoded_or_refusal(await request.body(), "http")
    if isinstance(decoded, JSONResponse):
        return decoded
    n = len(decoded) if isinstance(decoded, list) else 1
    metrics.RECEIVED.labels(channel="http").inc(n)
    if isinstance(decoded, list) and not decoded:
        return refusal_response(422, "invalid comment", [Refusal(Reason.invalid, None, "the list is empty")])
    if n > api.max_comments_per_request:
        metrics.REJECTED.labels(channel="http", reason=Reason.too_large.value).inc()
        return JSONResponse(status_code=413, content={
            "detail": f"too many comments in one request: {n} > {api.max_comments_per_request}"})
    ingestor = api.ingestor
    screened = ingestor.screen_body(decoded)
    refusals = [r for r in screened if isinstance(r, Refusal)]
    if refusals:
        ingestor.refused("http", refusals)
        return refusal_response(422, "invalid comment", refusals)
    items = [i for i in screened if not isinstance(i, Refusal)]
    outside = first_outside(items, who.scope)
    if outside is not None:
        # All or nothing, as for an invalid comment: a caller never has half a batch stored.
        metrics.REJECTED.labels(channel="http", reason=Reason.out_of_scope.value).inc()
        raise out_of_scope(outside)
    accepted = await ingestor.accept(items, "http", received_at=received_at)
    new = sum(a.outcome.value != "duplicate" for a in accepted)
    return JSONResponse(status_code=202, content={
        "accepted": new,
        "duplicates": len(items) - new,
        "items": [{"comment_id": a.comment_id, "outcome": a.outcome.value, "revision": a.revision}
                  for a in accepted],
    })


@webhooks.get("/webhooks/meta", tags=["webhooks"], response_class=PlainTextResponse)
async def meta_handshake(request: Request, api: Api) -> Response:
    """Meta's subscription check: echo hub.challenge when hub.verify_token is ours."""
    challenge = meta.handshake(request.query_params, api.verify_token)
    if challenge is None:
        return PlainTextResponse("verification failed: wrong hub.mode or hub.verify_token", status_code=403)
    return PlainTextResponse(challenge)


@webhooks.post("/webhooks/meta", tags=["webhooks"])
async def meta_delivery(request: Request, api: Api) -> Response:
    """A signed Meta delivery: 200 once its comments are committed and published (or the wait is over)."""
    received_at = time.perf_counter()
    if api.app_secret is None:
        return JSONResponse(status_code=503,
                            content={"detail": "webhook not configured: set TERRAIN_META_APP_SECRET"})
    body = await request.body()
    check = meta.verify_signature(body, request.headers.get(meta.SIGNATURE_HEADER), api.app_secret)
    if check is not meta.SignatureCheck.ok:
        metrics.REJECTED.labels(channel="webhook", reason="bad_signature").inc()
        status = 401 if check is meta.SignatureCheck.missing else 403
        return JSONResponse(status_code=status, content={
            "detail": f"signature {check.value}: X-Hub-Signature-256 must be sha256=HMAC-SHA256(body, app secret)"})
    decoded = decoded_or_refusal(body, "webhook")
    if isinstance(decoded, JSONResponse):
        return decoded
    changes = meta.count_changes(decoded)
    if changes > api.max_changes_per_delivery:
        metrics.REJECTED.labels(channel="webhook", reason=Reason.too_large.value).inc()
        return JSONResponse(status_code=413, content={
            "detail": f"too many changes in one delivery: {changes} > {api.max_changes_per_delivery}"})
    result = await api.ingestor.on_meta_delivery(decoded, received_at)
    if isinstance(result, Refusal):
        api.ingestor.refused("webhook", [result])
        return refusal_response(422, "invalid delivery", [result])
    return JSONResponse(status_code=200, content=result)
