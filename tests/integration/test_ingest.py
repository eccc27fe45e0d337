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
