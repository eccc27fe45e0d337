"""The sentiment service: `terrain.comments.v1` to `terrain.comments.scored.v1`, `POST /v1/score`, and the label
corrections community managers make (`/v1/corrections`), stored in PostgreSQL for the next training run. The routes
are in api.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import FastAPI
from pydantic import Field, field_validator

from services.sentiment import api, charter, metrics
from services.sentiment.api import MAX_SCORE_BODY_BYTES
from services.sentiment.handlers import Scoring
from services.sentiment.scorers import DEFAULT_SCORER, SCORER_NAMES, make_scorer
from terrain import telemetry
from terrain.runtime import ServiceRuntime
from terrain.settings import TerrainSettings
from terrain.topics import COMMENTS

SERVICE = "sentiment"


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
    app.state.sentiment_api = api.SentimentApi(scoring=scoring, pool=lambda: rt.pool, clock=clock)
    # The routes join the app's own list rather than through include_router, which keeps an included router's
    # routes behind one opaque entry where the HTTP edge (route templates, body limits) and the route-permission
    # test would not see them.
    app.router.routes.extend(api.router.routes)
    return app


def main() -> None:
    from terrain.runtime import configured, serve

    settings = configured(SERVICE, SentimentSettings)
    telemetry.configure_logging(settings, SERVICE)
    serve(configured(SERVICE, lambda: build_app(settings)), settings, settings.sentiment_port)
