"""Each service's consumers on FastStream's in-memory test broker (`TestKafkaBroker`): typed messages in, stored
effects and published messages out, dead-letters with their reason.

No Kafka underneath, so these run in a fraction of a second each; PostgreSQL is the real embedded one, since
the handlers' effects are SQL. What only a real broker can show (commit after the effects, redelivery after a
crash, partitions, consumer groups, the dead-letter bound) keeps its tests in tests/integration and tests/faults.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from services.escalation.app import EscalationSettings
from services.escalation.app import build_app as escalation_app
from services.events.app import EventsSettings
from services.events.app import build_app as events_app
from services.ingest.app import IngestSettings
from services.ingest.app import build_app as ingest_app
from services.sentiment.app import SentimentSettings
from services.sentiment.app import build_app as sentiment_app
from terrain.contracts import (
    Comment,
    CommentMessage,
    EscalationMessage,
    IncidentMessage,
    ScoredCommentMessage,
    Sentiment,
    SentimentLabel,
    comment_id_for,
)
from terrain.contracts.base import derived_id
from terrain.kafka import Publisher
from tests.conftest import running

COMMUNITY = "resto-lyon"
DLQ_REASON = "terrain-dlq-reason"


@pytest.fixture
def kwargs(schema_url: str) -> dict[str, Any]:
    """Settings for a service on the test broker: a real database schema; the broker address is never dialled."""
    return {"kafka_bootstrap_servers": "127.0.0.1:9", "create_topics": False, "database_url": schema_url,
            "api_token": "test-token"}


Seen = list[tuple[bytes | None, Any, dict[str, str]]]


def sink(broker: KafkaBroker, topic: str) -> Seen:
    """Every message published on `topic`: (key, decoded body, headers). Register before the broker starts."""
    seen: Seen = []

    @broker.subscriber(topic)
    async def collect(body: Any, msg: KafkaMessage) -> None:
        seen.append((msg.raw_message.key, body, dict(msg.headers)))

    return seen


@asynccontextmanager
async def in_memory(app: Any) -> AsyncIterator[tuple[KafkaBroker, httpx.AsyncClient]]:
    """The app's own lifespan (database, migrations, its consumers) with its broker swapped for the test broker."""
    async with TestKafkaBroker(app.state.runtime.broker) as broker, running(app) as client:
        yield broker, client


def comment(ext: str, text: str, **kw: Any) -> Comment:
    return Comment(source="facebook", external_id=ext, community_id=COMMUNITY, thread_id="post-1", text=text,
                   created_at=datetime.now(UTC) - timedelta(minutes=5), comment_id=comment_id_for("facebook", ext),
                   **kw)


def scored(ext: str, label: SentimentLabel) -> dict[str, Any]:
    c = comment(ext, "Service déplorable, 45 minutes d'attente. Je suis furieuse !", lang="fr")
    score = -0.8 if label is SentimentLabel.negative else 0.6
    return ScoredCommentMessage(
        message_id=f"scored-{ext}", occurred_at=c.created_at, producer="test", comment=c,
        sentiment=Sentiment(label=label, score=score, confidence=0.9, lang="fr", model_version="test"),
        scored_at=c.created_at,
    ).model_dump(mode="json")


class ThroughTestBroker:
    """Ingest sends with an aiokafka producer of its own (`BulkPublisher`, for `terrain import` too); here its
    sends go through the kernel's publisher, which is the test broker's."""

    def __init__(self, publisher: Publisher) -> None:
        self.publish = publisher.publish

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


async def test_ingest_inbound_publishes_each_comment_once_and_dead_letters_the_invalid(kwargs):
    app = ingest_app(IngestSettings(**kwargs))
    app.state.ingestor.publisher = ThroughTestBroker(app.state.runtime.publisher)
    out = sink(app.state.runtime.broker, "terrain.comments.v1")
    dlq = sink(app.state.runtime.broker, "terrain.comments.inbound.v1.dlq")
    draft = {"message_id": "in-1", "occurred_at": "2026-11-20T10:00:00Z", "producer": "crm", "source": "facebook",
             "external_id": "c9", "community_id": COMMUNITY, "thread_id": "post-1",
             "text": "Service déplorable !", "created_at": "2026-11-20T10:00:00Z"}
    async with in_memory(app) as (broker, client):
        await broker.publish(draft, topic="terrain.comments.inbound.v1", key=COMMUNITY.encode())
        await broker.publish({**draft, "message_id": "in-2"}, topic="terrain.comments.inbound.v1",
                             key=COMMUNITY.encode())  # the same comment from another message: a duplicate
        await broker.publish({**draft, "text": None}, topic="terrain.comments.inbound.v1", key=COMMUNITY.encode())
        posted = await client.post("/v1/comments", json={k: v for k, v in draft.items()
                                                         if k not in ("message_id", "occurred_at", "producer")})
    assert posted.status_code == 202 and posted.json()["items"][0]["outcome"] == "duplicate"
    assert len(out) == 1
    key, body, _ = out[0]
    message = CommentMessage.model_validate(body)
    assert key == COMMUNITY.encode()
    assert (message.comment.comment_id, message.comment.action.value) == (comment_id_for("facebook", "c9"), "created")
    assert [(k, h["terrain-dlq-origin-topic"]) for k, _, h in dlq] == [
        (COMMUNITY.encode(), "terrain.comments.inbound.v1")]
    assert "text" in dlq[0][2][DLQ_REASON]


async def test_sentiment_scores_each_comment_and_dead_letters_the_invalid(kwargs):
    app = sentiment_app(SentimentSettings(**kwargs, sentiment_scorer="lexicon"))
    out = sink(app.state.runtime.broker, "terrain.comments.scored.v1")
    dlq = sink(app.state.runtime.broker, "terrain.comments.v1.dlq")
    angry = CommentMessage(message_id="m-1", occurred_at=datetime.now(UTC), producer="test",
                           comment=comment("c1", "Service déplorable, bande de connards !"))
    kind = CommentMessage(message_id="m-3", occurred_at=datetime.now(UTC), producer="test",
                          comment=comment("c3", "Great evening, thank you so much!"))
    async with in_memory(app) as (broker, _):
        await broker.publish(angry.model_dump(mode="json"), topic="terrain.comments.v1", key=COMMUNITY.encode())
        # One batch: an invalid message between two good ones, and the first one again (a redelivery).
        await broker.publish_batch(kind.model_dump(mode="json"), {"message_id": "m-2"}, angry.model_dump(mode="json"),
                                   topic="terrain.comments.v1")
    assert [ScoredCommentMessage.model_validate(body).comment.external_id for _, body, _ in out] == ["c1", "c3", "c1"]
    first, again = (ScoredCommentMessage.model_validate(out[i][1]) for i in (0, 2))
    assert (again.message_id, again.sentiment, again.flags) == (first.message_id, first.sentiment, first.flags)
    assert ScoredCommentMessage.model_validate(out[1][1]).sentiment.label.value == "positive"
    key, body, _ = out[0]
    message = ScoredCommentMessage.model_validate(body)
    assert key == COMMUNITY.encode() and message.message_id == derived_id("terrain.comments.scored.v1", "m-1")
    assert (message.sentiment.label.value, message.sentiment.lang) == ("negative", "fr")
    assert [f.kind for f in message.flags] == ["insult"]
    [(_, _, headers)] = dlq
    assert "comment: Field required" in headers[DLQ_REASON]


async def test_escalation_opens_an_incident_stores_it_and_pages_on_a_cascade(kwargs):
    app = escalation_app(EscalationSettings(**kwargs))
    incidents = sink(app.state.runtime.broker, "terrain.incidents.v1")
    escalations = sink(app.state.runtime.broker, "terrain.escalations.v1")
    async with in_memory(app) as (broker, client):
        await broker.publish(scored("c1", SentimentLabel.negative), topic="terrain.comments.scored.v1",
                             key=COMMUNITY.encode())
        opened = (await client.get("/v1/incidents", params={"community_id": COMMUNITY})).json()["items"]
        for ext in ("c2", "c3"):  # three sure negatives in one thread: the default cascade pages a person
            await broker.publish(scored(ext, SentimentLabel.negative), topic="terrain.comments.scored.v1",
                                 key=COMMUNITY.encode())
        await broker.publish(scored("c2", SentimentLabel.negative), topic="terrain.comments.scored.v1",
                             key=COMMUNITY.encode())  # redelivered: counted once
        after = (await client.get("/v1/incidents", params={"community_id": COMMUNITY})).json()["items"]
    assert [(i["level"], i["negative_count"]) for i in opened] == [("respond", 1)]
    assert [(i["id"], i["level"], i["negative_count"]) for i in after] == [(opened[0]["id"], "human", 3)]
    events = [IncidentMessage.model_validate(body) for _, body, _ in incidents]
    kinds = [e.event.value for e in events]
    assert kinds[:1] == ["opened"] and "escalated" in kinds
    assert {e.incident.id for e in events} == {opened[0]["id"]}
    pages = [EscalationMessage.model_validate(body) for _, body, _ in escalations]
    assert [(p.target.value, p.incident_id) for p in pages] == [("human", opened[0]["id"])]
    assert all(key == COMMUNITY.encode() for key, _, _ in incidents + escalations)


async def test_events_plan_one_visit_per_field_escalation_and_dead_letter_the_invalid(kwargs):
    app = events_app(EventsSettings(**kwargs))
    dlq = sink(app.state.runtime.broker, "terrain.escalations.v1.dlq")
    field = {"message_id": "x-1", "occurred_at": "2026-11-24T08:00:00Z", "producer": "terrain-escalation",
             "escalation_id": "esc-f", "incident_id": "inc-1", "community_id": COMMUNITY, "thread_id": "post-7",
             "target": "field", "level": "field", "reason": "the crisis persists", "place": "Brasserie du Parc"}
    async with in_memory(app) as (broker, client):
        for message in (field, field, {**field, "target": "nowhere"}):
            await broker.publish(message, topic="terrain.escalations.v1", key=COMMUNITY.encode())
        items = (await client.get("/v1/events", params={"incident_id": "inc-1"})).json()["items"]
    assert [(e["kind"], e["status"], e["location"], e["escalation_id"]) for e in items] == [
        ("field_visit", "requested", "Brasserie du Parc", "esc-f")]
    [(_, _, headers)] = dlq
    assert "target" in headers[DLQ_REASON]


OUT_OF_RANGE = ["0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00-14:00", "1899-12-31T23:59:59Z",
                "2200-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]


async def test_timestamps_out_of_range_are_refused_with_a_422_not_stored_and_never_a_500(kwargs):
    # Once, an event starting in year 1 was stored, then every list of its community failed (PostgreSQL gave
    # back a time Python cannot hold), its impact raised OverflowError, and so did a silence ending in 9999.
    refused: list[tuple[str, int, str]] = []
    app = events_app(EventsSettings(**kwargs))
    async with in_memory(app) as (_, client):
        for when in OUT_OF_RANGE:
            r = await client.post("/v1/events", json={
                "community_id": COMMUNITY, "kind": "apero", "title": "Apéro", "starts_at": when, "location": "Lyon",
                "outcome": {"attendees": 4, "result": "success"}})
            refused.append(("event", r.status_code, r.text))
        listed = await client.get("/v1/events", params={"community_id": COMMUNITY})
    app = escalation_app(EscalationSettings(**kwargs))
    async with in_memory(app) as (_, client):
        for when in OUT_OF_RANGE:
            r = await client.post("/v1/silences", json={"matchers": {"community_id": COMMUNITY}, "starts_at": when,
                                                         "duration_minutes": 60, "created_by": "a", "comment": "c"})
            refused.append(("silence", r.status_code, r.text))
    assert listed.status_code == 200 and listed.json()["items"] == []
    assert [(what, code) for what, code, _ in refused] == [(w, 422) for w in ("event", "silence")
                                                            for _ in OUT_OF_RANGE]
    assert all("starts_at: timestamp out of range: years 1900 to 2199" in text for _, _, text in refused)
