"""Label corrections against a real PostgreSQL: upsert per comment, list filters, JSONL export, direct load."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.sentiment.app import SentimentSettings, build_app
from services.sentiment.corrections import corrections_to_training_rows
from services.sentiment.repository import load_corrections
from tests.conftest import running

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 25, 10, tzinfo=UTC)


class Clock:
    """Each read is one minute after the previous one, so every correction has its own time."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def settings(settings_kwargs: dict[str, Any]) -> SentimentSettings:
    return SentimentSettings(**settings_kwargs)


async def test_corrections_are_stored_listed_and_exported_for_training(settings, topic_overrides, schema_url):
    async with running(build_app(settings, topic_overrides=topic_overrides, clock=Clock())) as client:
        first = await client.post("/v1/corrections", json={
            "comment_id": "c-1", "text": "Service déplorable", "lang": "fr", "label": "neutral",
            "previous_label": "positive", "model_version": "lexicon-1", "corrected_by": "alice",
        })
        # The same comment corrected again: the latest wins, in place (200, same id).
        again = await client.post("/v1/corrections", json={
            "comment_id": "c-1", "text": "Service déplorable", "lang": "fr", "label": "negative",
            "previous_label": "positive", "corrected_by": "bob", "note": "a complaint, not neutral",
        })
        no_comment = await client.post("/v1/corrections", json={"text": "à quelle heure ouvre la boutique ?",
                                                                 "label": "neutral"})
        other = await client.post("/v1/corrections", json={"comment_id": "c-2", "text": "Top, merci !",
                                                            "label": "positive", "lang": "fr"})
        bad_label = await client.post("/v1/corrections", json={"text": "ok", "label": "angry"})
        no_text = await client.post("/v1/corrections", json={"label": "neutral"})
        unauth = await client.get("/v1/corrections", headers={"Authorization": "Bearer nope"})

        everything = await client.get("/v1/corrections")
        negatives = await client.get("/v1/corrections", params={"label": "negative"})
        since = await client.get("/v1/corrections", params={"since": (T0 + timedelta(minutes=3)).isoformat()})
        page = await client.get("/v1/corrections", params={"limit": 1, "offset": 1})
        bad_filter = await client.get("/v1/corrections", params={"label": "angry"})
        export = await client.get("/v1/corrections/export")
        metrics = await client.get("/metrics")

    assert (first.status_code, again.status_code, no_comment.status_code, other.status_code) == (201, 200, 201, 201)
    assert again.json()["id"] == first.json()["id"]
    stored = again.json()
    # The body's corrected_by is accepted but ignored: the correction is recorded under the caller's identity
    # (here the bootstrap token); made by an admin whose scope is everything, it needs no community.
    assert (stored["label"], stored["previous_label"], stored["corrected_by"], stored["note"]) == (
        "negative", "positive", "bootstrap-admin", "a complaint, not neutral")
    assert stored["community_id"] is None
    assert stored["previous_model_version"] is None  # the second correction did not name a model version
    assert bad_label.status_code == 422 and bad_label.json()["errors"][0]["field"] == "label"
    assert no_text.status_code == 422 and no_text.json()["errors"][0]["field"] == "text"
    assert unauth.status_code == 401

    texts = [c["text"] for c in everything.json()["items"]]  # newest first, one row for c-1
    assert texts == ["Top, merci !", "à quelle heure ouvre la boutique ?", "Service déplorable"]
    assert [c["comment_id"] for c in negatives.json()["items"]] == ["c-1"]
    # Corrections were made at T0+2 (c-1, updated), T0+3 (no comment id) and T0+4 (c-2).
    assert [c["text"] for c in since.json()["items"]] == ["Top, merci !", "à quelle heure ouvre la boutique ?"]
    assert [c["text"] for c in page.json()["items"]] == ["à quelle heure ouvre la boutique ?"]
    assert bad_filter.status_code == 422

    assert export.status_code == 200 and export.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert lines == [  # oldest first, the trainer's labelled-JSONL rows
        {"text": "Service déplorable", "label": "negative", "lang": "fr"},
        {"text": "à quelle heure ouvre la boutique ?", "label": "neutral", "lang": None},
        {"text": "Top, merci !", "label": "positive", "lang": "fr"},
    ]
    # The trainer can read the database directly and gets the same rows.
    assert corrections_to_training_rows(await load_corrections(schema_url)) == lines
    assert 'terrain_sentiment_corrections_total{label="negative",previous_label="positive"}' in metrics.text


async def test_corrections_stored_before_communities_survive_the_migration(settings, topic_overrides, schema_url):
    """A database the previous version wrote (migration 001 only, corrections without a community): after the
    upgrade they are still there, only for callers whose scope is every community, and an older client that
    names no community still corrects the same comment in place."""
    import asyncpg

    from terrain import db
    from terrain.access import store
    from terrain.access.model import Role, Scope

    conn = await asyncpg.connect(schema_url)
    try:
        [(version, name, first)] = [m for m in db.migration_files("services.sentiment") if m[0] == 1]
        await conn.execute(first.read_text(encoding="utf-8"))
        await conn.execute("""CREATE TABLE terrain_schema_migrations (component text NOT NULL, version int NOT NULL,
                                  name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
                                  PRIMARY KEY (component, version))""")
        await conn.execute("INSERT INTO terrain_schema_migrations (component, version, name) VALUES ($1, $2, $3)",
                           "sentiment", version, name)
        old = await conn.fetchval(
            """INSERT INTO sentiment_corrections (comment_id, text, label, corrected_by, created_at)
               VALUES ('c-old', 'Service lent', 'negative', 'alice', $1) RETURNING id""", T0)
    finally:
        await conn.close()
    app = build_app(settings, topic_overrides=topic_overrides, clock=Clock())
    async with running(app) as client:
        _, token = await store.create_key(app.state.runtime.pool, name="lyon-agent", role=Role.agent,
                                          scope=Scope.parse("resto-*"), created_by="test", expires_at=None)
        scoped = await client.get("/v1/corrections", headers={"Authorization": f"Bearer {token}"})
        before = await client.get("/v1/corrections")
        again = await client.post("/v1/corrections", json={"comment_id": "c-old", "text": "Service lent",
                                                            "label": "neutral", "corrected_by": "bob"})
    assert scoped.status_code == 200 and scoped.json()["items"] == []
    [row] = before.json()["items"]
    assert (row["id"], row["community_id"], row["corrected_by"]) == (old, None, "alice")
    assert again.status_code == 200 and again.json()["id"] == old and again.json()["label"] == "neutral"


async def test_load_corrections_before_the_service_ever_ran(schema_url):
    assert await load_corrections(schema_url) == []
