"""The sentiment service: `terrain.comments.v1` to `terrain.comments.scored.v1`, `POST /v1/score`, and the label
corrections community managers make (`/v1/corrections`), stored in PostgreSQL for the next training run."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import Field, TypeAdapter, ValidationError, field_validator

from services.sentiment import charter, corrections, metrics, repository
from services.sentiment.charter import Flag
from services.sentiment.handlers import Scoring
from services.sentiment.scorers import DEFAULT_SCORER, SCORER_NAMES, make_scorer
from services.sentiment.scorers.base import ScoreInput
from terrain import http, telemetry
from terrain.contracts import Sentiment
from terrain.contracts.base import Contract
from terrain.contracts.comments import Lang
from terrain.runtime import ServiceRuntime
from terrain.settings import TerrainSettings
from terrain.topics import COMMENTS

SERVICE = "sentiment"
MAX_TEXTS_PER_REQUEST = 1000
# A full batch of long comments (5,000 bytes each) fits; a larger body is refused before it is read.
MAX_SCORE_BODY_BYTES = MAX_TEXTS_PER_REQUEST * 5_000


class SentimentSettings(TerrainSettings):
    sentiment_port: int = Field(default=8082, description="HTTP port of the sentiment service.")
    sentiment_scorer: str = Field(
        default=DEFAULT_SCORER,
        description=f"Which scorer to use: {', '.join(SCORER_NAMES)} (see the model card for each one's terms).",
    )
    sentiment_hostility_model: bool = Field(
        default=True,
        description="Use the shipped French hostility and identity-hate models for the insult and hate flags "
        "(research-only data terms); false: rules only.",
    )
    sentiment_model_path: str | None = Field(
        default=None, description="Model file (.npz) for a learned scorer; default: the model shipped with it."
    )
    sentiment_accurate_per_second: float | None = Field(
        default=None, gt=0,
        description="Cascade only: at most this many comments a second go to the accurate tier (a token bucket; "
        "past it a comment keeps the fast tier's result and its version). Default: no limit, so the same "
        "comment always gets the same score.",
    )

    @field_validator("sentiment_scorer")
    @classmethod
    def _known_scorer(cls, value: str) -> str:
        if value not in SCORER_NAMES:
            raise ValueError(f"unknown scorer {value!r}; known: {', '.join(SCORER_NAMES)}")
        return value


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


def build_app(
    settings: SentimentSettings | None = None,
    *,
    topic_overrides: dict[str, str] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FastAPI:
    settings = settings or SentimentSettings()
    # The database holds the label corrections only, but the service now needs it to start: the kernel
    # connects and migrates before it starts consuming.
    rt = ServiceRuntime(SERVICE, settings, migrations_package="services.sentiment", topic_overrides=topic_overrides)
    scorer = make_scorer(settings.sentiment_scorer, settings.sentiment_model_path, record=metrics.record_cascade,
                         accurate_per_second=settings.sentiment_accurate_per_second)
    models = charter.charter_models(settings.sentiment_hostility_model)
    scoring = Scoring(rt, scorer, clock, lambda text: charter.flags_with(models, text))
    rt.consumer(COMMENTS, scoring.on_comments)

    app = telemetry.build_http_app(
        pool=rt.pool_or_none,
        service=SERVICE, settings=settings, health=rt.health, lifespan=rt.lifespan,
        description="Scores comments (sentiment, charter flags) from terrain.comments.v1 to "
                    "terrain.comments.scored.v1, and texts ad hoc.",
        max_body_bytes={"/v1/score": MAX_SCORE_BODY_BYTES},
    )
    app.state.runtime = rt
    auth = telemetry.token_guard(settings)

    @app.post("/v1/score", dependencies=[Depends(auth)], tags=["score"])
    async def score(
        body: Annotated[Any, Body(description='{"text": ..., "lang": optional}, or a list of them.')],
    ) -> dict[str, list[ScoreResult]]:
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
        assessments = await scoring.assess([ScoreInput(r.text, r.lang) for r in requests])
        return {"items": [ScoreResult(sentiment=a.sentiment, flags=a.found) for a in assessments]}

    @app.post(
        "/v1/corrections", status_code=201, dependencies=[Depends(auth)], tags=["corrections"],
        responses={200: {"description": "This comment had a correction: the new one replaced it."}},
    )
    async def post_correction(body: corrections.CorrectionIn, response: Response) -> corrections.Correction:
        stored, created = await repository.save(rt.pool, body, clock())
        if not created:
            response.status_code = 200
        corrections.count(body)
        return stored

    @app.get("/v1/corrections", dependencies=[Depends(auth)], tags=["corrections"])
    async def list_corrections(
        since: Annotated[datetime | None, Query(description="Only corrections made at or after this time.")] = None,
        label: Annotated[str | None, Query(pattern=r"^(negative|neutral|positive)$")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, list[corrections.Correction]]:
        if since is not None and since.tzinfo is None:
            raise http.invalid_request([{"field": "since", "message": "give a timezone, e.g. Z"}])
        items = await repository.list_corrections(rt.pool, since=since, label=label, limit=limit, offset=offset)
        return {"items": items}

    @app.get(
        "/v1/corrections/export", dependencies=[Depends(auth)], tags=["corrections"],
        response_class=StreamingResponse,
        responses={200: {"content": {"application/x-ndjson": {}},
                         "description": 'One {"text", "label", "lang"} per line: `terrain sentiment train --data`.'}},
    )
    async def export_corrections() -> StreamingResponse:
        async def lines() -> AsyncIterator[bytes]:
            async for row in repository.stream_training_rows(rt.pool):
                yield (json.dumps(corrections.training_row(row), ensure_ascii=False) + "\n").encode()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return app


def main() -> None:
    from terrain.runtime import configured, serve

    settings = configured(SERVICE, SentimentSettings)
    telemetry.configure_logging(settings, SERVICE)
    serve(configured(SERVICE, lambda: build_app(settings)), settings, settings.sentiment_port)
