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
        # What `curl -d 'a=b'` sends: a form. A JSON body is refused under any type but JSON's, as on every
        # service: one rule, read from the header before the body.
        form = await client.post("/v1/comments", content=b"a=b",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        json_as_text = await client.post("/v1/comments", content=json.dumps(comment("f")).encode(),
                                         headers={"Content-Type": "text/plain"})
    assert form.status_code == 415
    assert "Content-Type: application/json" in form.json()["detail"]
    assert "application/x-www-form-urlencoded" in form.json()["detail"]
    assert json_as_text.status_code == 415 and "text/plain" in json_as_text.json()["detail"]
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
    written = "2025-12-31T10:00:00Z"  # before the clock's first reading: not a comment from the future
    async with running(app) as client:
        old = await client.post("/v1/comments", json=[comment(f"old{i}", created_at=written) for i in range(5)])
        now[0] += timedelta(days=6)
        await client.post("/v1/comments", json=comment("recent", created_at=written))
        now[0] += timedelta(days=2)  # the first five are 8 days old, the last one 2
        pruned = await app.state.pruner.prune_once()
        again = await client.post("/v1/comments", json=comment("recent", created_at=written))
        async with app.state.runtime.pool.acquire() as conn:
            hashed = await conn.fetchval("SELECT count(*) FROM ingest_comments WHERE content_hash IS NOT NULL")
            known = await conn.fetchval("SELECT count(*) FROM ingest_comments")
    assert old.json()["accepted"] == 5
    assert pruned == 5 and hashed == 1  # in batches of two: 2 + 2 + 1
    assert known == 6  # each comment is still known: only its content hash went
    assert again.json()["duplicates"] == 1  # the recent record still deduplicates
    assert metrics.DEDUP_PRUNED._value.get() - pruned_before == 5
    assert metrics.DEDUP_OLDEST_AGE._value.get() == timedelta(days=2).total_seconds()


async def test_a_comment_dated_in_the_future_is_refused_on_http_and_dead_lettered_on_the_topic(
        settings_kwargs, topic_overrides, kafka_bootstrap):
    from services.ingest import metrics

    app = build_app(IngestSettings(**settings_kwargs), topic_overrides=topic_overrides)
    inbound = topic_overrides["terrain.comments.inbound.v1"]
    env = {"occurred_at": "2026-11-20T10:00:00Z", "producer": "crm"}
    refused_before = metrics.REJECTED.labels(channel="http", reason="future_timestamp")._value.get()
    async with running(app) as client:
        posted = await client.post("/v1/comments", json=comment("f1", created_at="2199-01-01T00:00:00Z"))
        listed = await client.post("/v1/comments", json=[comment("f2"),
                                                         comment("f3", created_at="2030-06-01T00:00:00Z")])
        await produce(kafka_bootstrap, inbound, [
            ("resto-lyon", {"message_id": "m-f4", **env, **comment("f4", created_at="2199-01-01T00:00:00Z")}),
            ("resto-lyon", {"message_id": "m-f5", **env, **comment("f5")}),  # read after it: the topic flowed
        ])
        out = await consume(kafka_bootstrap, topic_overrides["terrain.comments.v1"], expect=1, settle_s=1.5)
        dlq = await consume(kafka_bootstrap, topic_overrides["terrain.comments.inbound.v1.dlq"], expect=1)
    assert posted.status_code == 422
    assert posted.json()["errors"] == [
        {"field": "created_at", "reason": "future_timestamp", "message": posted.json()["errors"][0]["message"]}]
    assert "created_at" in posted.json()["detail"] and "2199-01-01" in posted.json()["detail"]
    assert listed.status_code == 422 and [e["field"] for e in listed.json()["errors"]] == ["[1].created_at"]
    assert metrics.REJECTED.labels(channel="http", reason="future_timestamp")._value.get() - refused_before == 2
    # Only the comment dated today reached terrain.comments.v1; none of the future ones (the list was refused whole).
    assert [json.loads(r.value)["comment"]["external_id"] for r in out] == ["f5"]
    [letter] = dlq
    assert headers_of(letter)["terrain-dlq-reason"].startswith("refused: future_timestamp: created_at: dated 2199")
    assert json.loads(letter.value)["external_id"] == "f4" and letter.key == b"resto-lyon"


async def test_a_control_character_in_an_id_or_a_place_is_refused_naming_the_field(settings_kwargs, topic_overrides):
    app = build_app(IngestSettings(**settings_kwargs), topic_overrides=topic_overrides)
    async with running(app) as client:
        newline = await client.post("/v1/comments", json=comment("h1", community_id="resto-lyon\n<!channel>"))
        nul = await client.post("/v1/comments", json=comment("h2", thread_id="post-1\x00"))
        bidi = await client.post("/v1/comments", json=[comment("h3"), comment("h4", place="Lyon \u202eevil")])
        # Markup is not refused (a chat notification escapes it): an id is text, shown as typed.
        markup = await client.post("/v1/comments", json=comment("h5", thread_id="<https://evil.example|click>"))
    assert newline.status_code == 422 and newline.json()["errors"][0]["field"] == "community_id"
    assert "U+000A" in newline.json()["detail"]
    assert nul.status_code == 422 and nul.json()["errors"][0]["field"] == "thread_id"
    assert bidi.status_code == 422 and [e["field"] for e in bidi.json()["errors"]] == ["[1].place"]
    assert "U+202E" in bidi.json()["errors"][0]["message"]
    assert markup.status_code == 202, markup.text
