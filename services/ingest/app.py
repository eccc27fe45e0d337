"""The ingest service: `POST /v1/comments` and the inbound topic, to `terrain.comments.v1`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException
from pydantic import Field, TypeAdapter, ValidationError

from services.ingest import metrics
from services.ingest.handlers import Ingestor
from terrain import telemetry
from terrain.contracts import CommentIn
from terrain.kafka import describe_validation_error
from terrain.runtime import ServiceRuntime
from terrain.settings import TerrainSettings
from terrain.topics import COMMENTS_INBOUND

SERVICE = "ingest"
MAX_COMMENTS_PER_REQUEST = 1000


class IngestSettings(TerrainSettings):
    ingest_port: int = Field(default=8081, description="HTTP port of the ingest service.")


_one_or_many: TypeAdapter[CommentIn | list[CommentIn]] = TypeAdapter(CommentIn | list[CommentIn])


def build_app(
    settings: IngestSettings | None = None,
    *,
    topic_overrides: dict[str, str] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FastAPI:
    settings = settings or IngestSettings()
    rt = ServiceRuntime(SERVICE, settings, migrations_package="services.ingest", topic_overrides=topic_overrides)
    ingestor = Ingestor(rt, clock)
    rt.consumer(COMMENTS_INBOUND, ingestor.on_inbound)

    app = telemetry.build_http_app(
        service=SERVICE, health=rt.health, lifespan=rt.lifespan,
        description="Accepts comments and publishes them, deduplicated, to terrain.comments.v1.",
    )
    app.state.runtime = rt
    auth = telemetry.token_guard(settings)

    @app.post("/v1/comments", status_code=202, dependencies=[Depends(auth)], tags=["comments"])
    async def post_comments(
        body: Annotated[Any, Body(description="One comment object, or a list of them.")],
    ) -> dict[str, Any]:
        try:
            parsed = _one_or_many.validate_python(body)
        except ValidationError as exc:
            metrics.REJECTED.labels(channel="http").inc()
            raise HTTPException(status_code=422, detail=f"invalid comment: {describe_validation_error(exc)}") from exc
        comments = parsed if isinstance(parsed, list) else [parsed]
        if not comments:
            raise HTTPException(status_code=422, detail="invalid comment: the list is empty")
        if len(comments) > MAX_COMMENTS_PER_REQUEST:
            raise HTTPException(
                status_code=413,
                detail=f"too many comments in one request: {len(comments)} > {MAX_COMMENTS_PER_REQUEST}",
            )
        accepted = await ingestor.accept(comments, "http")
        return {
            "accepted": sum(a.outcome.value != "duplicate" for a in accepted),
            "duplicates": len(comments) - sum(a.outcome.value != "duplicate" for a in accepted),
            "items": [
                {"comment_id": a.comment_id, "outcome": a.outcome.value, "revision": a.revision} for a in accepted
            ],
        }

    return app


def main() -> None:
    from terrain.runtime import serve

    settings = IngestSettings()
    telemetry.configure_logging(settings, SERVICE)
    serve(build_app(settings), settings, settings.ingest_port)
