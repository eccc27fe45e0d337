"""Ingest against the real broker and PostgreSQL: dedup, validation, dead-lettering."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.ingest.app import IngestSettings, build_app
from terrain.contracts import CommentMessage, comment_id_for
from tests.conftest import running
from tests.kafka_helpers import consume, headers_of, produce

pytestmark = pytest.mark.integration


def comment(external_id: str = "c1", text: str = "Service déplorable, je suis furieux !", **kw: Any) -> dict[str, Any]:
    return {
        "source": "facebook", "external_id": external_id, "community_id": "resto-lyon",
        "thread_id": "post-1", "author_id": "u1", "author_name": "Jeanne", "text": text,
        "created_at": "2026-11-20T10:00:00Z", **kw,
    }


async def test_same_comment_twice_yields_one_message(settings_kwargs, topic_overrides, kafka_bootstrap):
    app = build_app(IngestSettings(**settings_kwargs), topic_overrides=topic_overrides)
    async with running(app) as client:
        first = await client.post("/v1/comments", json=comment())
        second = await client.post("/v1/comments", json=comment())
        edited = await client.post("/v1/comments", json=comment(text="Service déplorable. Mise à jour : remboursé."))
    assert first.status_code == 202 and first.json()["items"][0]["outcome"] == "created"
    assert second.json()["items"][0]["outcome"] == "duplicate"
    assert edited.json()["items"][0] == {
        "comment_id": comment_id_for("facebook", "c1"), "outcome": "edited", "revision": 2,
    }
    records = await consume(kafka_bootstrap, topic_overrides["terrain.comments.v1"], expect=2, settle_s=1.0)
    messages = [CommentMessage.model_validate_json(r.value) for r in records]
    assert [(m.comment.action.value, m.comment.revision) for m in messages] == [("created", 1), ("edited", 2)]
    assert all(r.key == b"resto-lyon" for r in records)


async def test_bad_input_gets_422_naming_the_field(settings_kwargs, topic_overrides):
    app = build_app(IngestSettings(**settings_kwargs), topic_overrides=topic_overrides)
    bad = comment()
    del bad["community_id"]
    async with running(app) as client:
        r = await client.post("/v1/comments", json=[comment("ok"), bad])
        naive = await client.post("/v1/comments", json=comment(created_at="2026-11-20T10:00:00"))
        unauth = await client.post("/v1/comments", json=comment(), headers={"Authorization": "Bearer nope"})
    assert r.status_code == 422 and "community_id" in r.json()["detail"]
    assert naive.status_code == 422 and "created_at" in naive.json()["detail"]
    assert unauth.status_code == 401


async def test_inbound_topic_publishes_and_dead_letters(settings_kwargs, topic_overrides, kafka_bootstrap):
    app = build_app(IngestSettings(**settings_kwargs), topic_overrides=topic_overrides)
    inbound = topic_overrides["terrain.comments.inbound.v1"]
    good = {"message_id": "m-1", "occurred_at": "2026-11-20T10:00:00Z", "producer": "crm", **comment("c9")}
    async with running(app):
        await produce(kafka_bootstrap, inbound, [("resto-lyon", good), ("resto-lyon", b"{not json"),
                                                 ("resto-lyon", {**good, "text": None})])
        out = await consume(kafka_bootstrap, topic_overrides["terrain.comments.v1"], expect=1)
        dlq = await consume(kafka_bootstrap, topic_overrides["terrain.comments.inbound.v1.dlq"], expect=2)
    assert [json.loads(r.value)["comment"]["external_id"] for r in out] == ["c9"]
    reasons = sorted(headers_of(r)["terrain-dlq-reason"] for r in dlq)
    assert len(reasons) == 2
    assert any("text" in reason for reason in reasons)
    assert all(headers_of(r)["terrain-dlq-origin-topic"] == inbound for r in dlq)
    assert all(r.key == b"resto-lyon" for r in dlq)


async def test_http_errors_name_the_line_or_the_field(settings_kwargs, topic_overrides):
    app = build_app(IngestSettings(**settings_kwargs), topic_overrides=topic_overrides)
    async with running(app) as client:
        broken = await client.post("/v1/comments", content=b'{"source": "facebook",\n  "text": oops}',
                                   headers={"Content-Type": "application/json"})
        single = await client.post("/v1/comments", json={**comment(), "created_at": "hier"})
        listed = await client.post("/v1/comments", json=[comment("a"), comment("b", text="")])
        unknown = await client.post("/v1/comments", json=comment(source="myspace"))
        scalar = await client.post("/v1/comments", json=42)
        # What `curl -d 'a=b'` sends: a form. And a JSON body under the form's header is still read.
        form = await client.post("/v1/comments", content=b"a=b",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        json_as_form = await client.post("/v1/comments", content=json.dumps(comment("f")).encode(),
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    assert "Content-Type: application/json" in form.json()["detail"]
    assert "application/x-www-form-urlencoded" in form.json()["detail"]
    assert json_as_form.status_code == 202
    assert broken.status_code == 400
    assert (broken.json()["line"], broken.json()["column"]) == (2, 11)
    assert "line 2, column 11" in broken.json()["detail"]
    assert single.status_code == 422
    assert [e["field"] for e in single.json()["errors"]] == ["created_at"]  # no noise about lists
    assert "list" not in single.json()["detail"].lower()
    assert listed.status_code == 422 and listed.json()["errors"] == [
        {"field": "[1].text", "reason": "empty_text", "message": listed.json()["errors"][0]["message"]}]
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "source"
    assert unknown.json()["errors"][0]["reason"] == "unknown_source"
    assert scalar.status_code == 422


async def test_same_decision_on_the_topic_path_and_long_texts_truncated(settings_kwargs, topic_overrides,
                                                                     kafka_bootstrap):
    app = build_app(IngestSettings(**settings_kwargs, ingest_max_text_chars=1000), topic_overrides=topic_overrides)
    inbound = topic_overrides["terrain.comments.inbound.v1"]
    env = {"occurred_at": "2026-11-20T10:00:00Z", "producer": "crm"}
    long_text = "Très déçu. " * 3000  # 33,000 characters: over the contract's 20,000 too
    async with running(app):
        await produce(kafka_bootstrap, inbound, [
            ("resto-lyon", {"message_id": "m-1", **env, **comment("e1", text="  ")}),
            ("resto-lyon", {"message_id": "m-2", **env, **comment("e2", source="myspace")}),
            ("resto-lyon", {"message_id": "m-3", **env, **comment("e3", text=long_text)}),
        ])
        out = await consume(kafka_bootstrap, topic_overrides["terrain.comments.v1"], expect=1, settle_s=0.5)
        dlq = await consume(kafka_bootstrap, topic_overrides["terrain.comments.inbound.v1.dlq"], expect=2)
    [msg] = [CommentMessage.model_validate_json(r.value) for r in out]
    assert msg.comment.external_id == "e3" and msg.comment.text_truncated and len(msg.comment.text) == 1000
    reasons = sorted(headers_of(r)["terrain-dlq-reason"] for r in dlq)
    assert reasons[0].startswith("refused: empty_text: text") and reasons[1].startswith("refused: unknown_source")


async def test_dedup_records_are_pruned_after_the_window(settings_kwargs, topic_overrides):
    from datetime import UTC, datetime, timedelta

    from services.ingest import metrics

    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    app = build_app(IngestSettings(**settings_kwargs, ingest_dedup_retention_days=7, ingest_prune_batch=2),
                    topic_overrides=topic_overrides, clock=lambda: now[0])
    pruned_before = metrics.DEDUP_PRUNED._value.get()
    async with running(app) as client:
        old = await client.post("/v1/comments", json=[comment(f"old{i}") for i in range(5)])
        now[0] += timedelta(days=6)
        await client.post("/v1/comments", json=comment("recent"))
        now[0] += timedelta(days=2)  # the first five are 8 days old, the last one 2
        pruned = await app.state.pruner.prune_once()
        again = await client.post("/v1/comments", json=comment("recent"))
        async with app.state.runtime.pool.acquire() as conn:
            left = await conn.fetchval("SELECT count(*) FROM ingest_comments")
    assert old.json()["accepted"] == 5
    assert pruned == 5 and left == 1  # in batches of two: 2 + 2 + 1
    assert again.json()["duplicates"] == 1  # the recent record still deduplicates
    assert metrics.DEDUP_PRUNED._value.get() - pruned_before == 5
    assert metrics.DEDUP_OLDEST_AGE._value.get() == timedelta(days=2).total_seconds()
