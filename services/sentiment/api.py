"""Sentiment's HTTP routes: ad-hoc scoring (the read permission) and the label corrections community managers make
(the act permission to make one; read, within the caller's scope, to list and export them).

`build_app` adds the routes of `router` to its app and hands them what they use through `app.state.sentiment_api`
(a `SentimentApi`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import Body, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import Field, TypeAdapter, ValidationError

from services.sentiment import corrections, repository
from services.sentiment.charter import Flag
from services.sentiment.handlers import Scoring
from services.sentiment.scorers.base import ScoreInput
from terrain import http
from terrain.access.deps import Agent, Reader, api_router, out_of_scope
from terrain.access.model import Identity
from terrain.contracts import Sentiment
from terrain.contracts.base import Contract
from terrain.contracts.comments import Lang

MAX_TEXTS_PER_REQUEST = 1000
# A full batch of long comments (5,000 bytes each) fits; a larger body is refused before it is read.
MAX_SCORE_BODY_BYTES = MAX_TEXTS_PER_REQUEST * 5_000


class ScoreRequest(Contract):
    """A text to score ad hoc; `lang` (ISO 639-1) skips language detection."""

    text: str = Field(max_length=20_000)
    lang: Lang | None = None


class ScoreResult(Contract):
    sentiment: Sentiment
    flags: list[Flag]


_many: TypeAdapter[list[ScoreRequest]] = TypeAdapter(list[ScoreRequest])


def parse_requests(body: Any) -> list[ScoreRequest]:
    """One request object or a list of them; errors name the field (`text`, `1.lang`), not the union."""
    if isinstance(body, list):
        return _many.validate_python(body)
    return [ScoreRequest.model_validate(body)]


@dataclass(frozen=True)
class SentimentApi:
    """What the routes work with, made once by `build_app`."""

    scoring: Scoring
    pool: Callable[[], asyncpg.Pool]
    clock: Callable[[], datetime]


def sentiment_api(request: Request) -> SentimentApi:
    api: SentimentApi = request.app.state.sentiment_api
    return api


Api = Annotated[SentimentApi, Depends(sentiment_api)]

router = api_router()


@router.post("/v1/score", tags=["score"])
async def score(
    who: Reader, api: Api,
    body: Annotated[Any, Body(description='{"text": ..., "lang": optional}, or a list of them.')],
) -> dict[str, list[ScoreResult]]:
    """Score texts ad hoc: nothing is stored or published, so any role that reads may."""
    try:
        requests = parse_requests(body)
    except ValidationError as exc:
        raise http.invalid_request(http.field_errors(exc.errors()), what="invalid text") from exc
    if not requests:
        raise http.invalid_request([{"field": "(body)", "message": "the list is empty"}], what="invalid text")
    if len(requests) > MAX_TEXTS_PER_REQUEST:
        raise HTTPException(
            status_code=413, detail=f"too many texts in one request: {len(requests)} > {MAX_TEXTS_PER_REQUEST}"
        )
    assessments = await api.scoring.assess([ScoreInput(r.text, r.lang) for r in requests])
    return {"items": [ScoreResult(sentiment=a.sentiment, flags=a.found) for a in assessments]}


def check_community(who: Identity, community_id: str | None) -> None:
    """A correction is kept in its comment's community. A caller whose scope is every community may leave it out
    (the correction is then seen only by such callers, as corrections made before communities were recorded);
    any other caller names it, and it must be one of theirs."""
    if community_id is None:
        if not who.scope.everything:
            raise http.invalid_request([{"field": "community_id", "message": (
                "required: name the comment's community (your scope holds only some communities)")}])
    elif not who.scope.allows(community_id):
        raise out_of_scope(community_id)


@router.post(
    "/v1/corrections", status_code=201, tags=["corrections"],
    responses={200: {"description": "This comment had a correction in this community: the new one replaced it."},
               403: {"description": "The role may not act, or the community is outside the caller's scope."}},
)
async def post_correction(
    body: corrections.CorrectionIn, response: Response, who: Agent, api: Api,
) -> corrections.Correction:
    """Record the right label for a text (roles agent, moderator, admin), under the caller's name."""
    check_community(who, body.community_id)
    stored, created = await repository.save(api.pool(), body, api.clock(), corrected_by=who.actor)
    if not created:
        response.status_code = 200
    corrections.count(body)
    return stored


@router.get("/v1/corrections", tags=["corrections"])
async def list_corrections(
    who: Reader, api: Api,
    since: Annotated[datetime | None, Query(description="Only corrections made at or after this time.")] = None,
    label: Annotated[str | None, Query(pattern=r"^(negative|neutral|positive)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, list[corrections.Correction]]:
    """Corrections of the caller's communities, newest first."""
    if since is not None and since.tzinfo is None:
        raise http.invalid_request([{"field": "since", "message": "give a timezone, e.g. Z"}])
    items = await repository.list_corrections(api.pool(), who.scope, since=since, label=label, limit=limit,
                                              offset=offset)
    return {"items": items}


@router.get(
    "/v1/corrections/export", tags=["corrections"], response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}},
                     "description": 'One {"text", "label", "lang"} per line: `terrain sentiment train --data`.'}},
)
async def export_corrections(who: Reader, api: Api) -> StreamingResponse:
    """The corrected texts of the caller's communities as training rows (the latest label of each text)."""
    pool = api.pool()

    async def lines() -> AsyncIterator[bytes]:
        async for row in repository.stream_training_rows(pool, who.scope):
            yield (json.dumps(corrections.training_row(row), ensure_ascii=False) + "\n").encode()

    return StreamingResponse(lines(), media_type="application/x-ndjson")
