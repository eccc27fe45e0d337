"""Escalation against the real broker and PostgreSQL: incidents, deduplication, cascade, ack and resolve."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.escalation.app import EscalationSettings, build_app
from terrain.contracts import (
    Comment,
    EscalationMessage,
    IncidentMessage,
    ScoredCommentMessage,
    Sentiment,
    SentimentLabel,
    comment_id_for,
)
from tests.conftest import running
from tests.kafka_helpers import consume, produce

pytestmark = pytest.mark.integration

SCORED = "terrain.comments.scored.v1"
COMMUNITY = "resto-lyon"
CREATED = datetime.now(UTC) - timedelta(hours=1)


def scored(ext: str, label: SentimentLabel = SentimentLabel.negative, *, thread: str = "post-1",
           message_id: str | None = None, removed: bool = False) -> dict[str, Any]:
    score = -0.8 if label is SentimentLabel.negative else 0.6
    msg = ScoredCommentMessage(
        message_id=message_id or f"scored-{ext}",
        occurred_at=CREATED,
        producer="terrain-sentiment",
        comment=Comment(
            source="facebook", external_id=ext, community_id=COMMUNITY, thread_id=thread,
            text="Service déplorable, 45 minutes d'attente et un plat froid. Je suis furieuse !",
            created_at=CREATED, comment_id=comment_id_for("facebook", ext), lang="fr",
            action="removed" if removed else "created",
        ),
        sentiment=Sentiment(label=label, score=score, confidence=0.9, lang="fr", model_version="test"),
        scored_at=CREATED,
    )
    return msg.model_dump(mode="json")


async def wait_for(check: Callable[[], Awaitable[Any]], what: str, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def incidents(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    r = await client.get("/v1/incidents", params={"community_id": COMMUNITY, **params})
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def test_negative_comment_opens_one_incident_and_duplicates_attach_once(
    settings_kwargs, topic_overrides, kafka_bootstrap
):
    app = build_app(EscalationSettings(**settings_kwargs), topic_overrides=topic_overrides)
    topic = topic_overrides[SCORED]
    async with running(app) as client:
        await produce(kafka_bootstrap, topic, [
            (COMMUNITY, scored("c1")),
            (COMMUNITY, scored("c1")),  # the same message redelivered
            (COMMUNITY, scored("c1", message_id="rescored-c1")),  # the same comment under another message id
            (COMMUNITY, scored("gone", thread="post-2", removed=True)),  # removed: opens nothing
            # Counted, not evidence; once it shows, every message before it was processed.
            (COMMUNITY, scored("thanks", SentimentLabel.positive)),
        ])

        def counted(n: int) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
            async def check() -> list[dict[str, Any]]:
                found = await incidents(client)
                return found if found and found[0]["comment_count"] == n else []
            return check

        await wait_for(counted(2), "the incident to count the positive reply")
        # Later batches: the redelivery is claimed already; the re-scored comment is attached already.
        await produce(kafka_bootstrap, topic, [
            (COMMUNITY, scored("c1")),
            (COMMUNITY, scored("c1", message_id="late-c1")),
            (COMMUNITY, scored("thanks-2", SentimentLabel.positive)),
        ])
        found = await wait_for(counted(3), "the incident to count the second positive reply")
        detail = (await client.get(f"/v1/incidents/{found[0]['id']}")).json()
    assert len(found) == 1
    inc = found[0]
    assert (inc["thread_id"], inc["state"], inc["level"]) == ("post-1", "open", "respond")
    assert (inc["comment_count"], inc["negative_count"]) == (3, 1)
    assert "deserves an answer" in inc["reason"]
    assert any("private message before" in a for a in inc["recommended_actions"])
    assert [e["external_id"] for e in detail["evidence"]] == ["c1"]
    assert [t["event"] for t in detail["timeline"]] == ["opened"]
    out = await consume(kafka_bootstrap, topic_overrides["terrain.incidents.v1"], expect=1, settle_s=1.0)
    assert [IncidentMessage.model_validate_json(r.value).event.value for r in out] == ["opened"]
    assert all(r.key == COMMUNITY.encode() for r in out)


async def test_cascade_escalates_then_ack_and_resolve(settings_kwargs, topic_overrides, kafka_bootstrap):
    app = build_app(EscalationSettings(**settings_kwargs), topic_overrides=topic_overrides)
    async with running(app) as client:
        await produce(kafka_bootstrap, topic_overrides[SCORED],
                      [(COMMUNITY, scored("n1")), (COMMUNITY, scored("n2")), (COMMUNITY, scored("n3"))])

        async def escalated() -> list[dict[str, Any]]:
            return await incidents(client, level="human")

        inc = (await wait_for(escalated, "the cascade to escalate"))[0]
        assert inc["negative_count"] == 3 and inc["state"] == "open"
        assert await incidents(client, level="respond") == []
        iid = inc["id"]

        acked = await client.post(f"/v1/incidents/{iid}/ack", json={"actor": "claire", "note": "on it"})
        again = await client.post(f"/v1/incidents/{iid}/ack")
        resolved = await client.post(f"/v1/incidents/{iid}/resolve")  # no body: the actor defaults
        twice = await client.post(f"/v1/incidents/{iid}/resolve", json={"actor": "claire"})
        ack_resolved = await client.post(f"/v1/incidents/{iid}/ack")
        unknown = await client.post("/v1/incidents/nope/resolve")
        unknown_get = await client.get("/v1/incidents/nope")
        detail = (await client.get(f"/v1/incidents/{iid}")).json()
        by_state = await incidents(client, state="resolved")
        bad_state = await client.get("/v1/incidents", params={"state": "closed"})
        unauth = await client.get("/v1/incidents", headers={"Authorization": "Bearer wrong"})
        exported = (await client.get("/metrics")).text

    assert acked.status_code == 200 and acked.json()["state"] == "acknowledged"
    assert again.status_code == 409 and "already acknowledged" in again.json()["detail"]
    assert resolved.status_code == 200 and resolved.json()["state"] == "resolved"
    assert twice.status_code == 409 and ack_resolved.status_code == 409
    assert unknown.status_code == 404 and unknown_get.status_code == 404
    assert [i["id"] for i in by_state] == [iid]
    assert bad_state.status_code == 422 and unauth.status_code == 401
    assert 'terrain_escalation_incident_transitions_total{event="escalated"}' in exported
    assert 'terrain_escalation_incidents_opened_total{level="respond"}' in exported
    assert 'terrain_escalation_open_incidents{level="human"}' in exported
    timeline = detail["timeline"]
    assert [t["event"] for t in timeline] == ["opened", "updated", "escalated", "acknowledged", "resolved"]
    assert timeline[3]["actor"] == "claire" and timeline[3]["detail"] == "acknowledged by claire: on it"
    assert timeline[4]["actor"] == "api"

    incidents_topic = topic_overrides["terrain.incidents.v1"]
    lifecycle = await consume(kafka_bootstrap, incidents_topic, expect=5, settle_s=1.0)
    messages = [IncidentMessage.model_validate_json(r.value) for r in lifecycle]
    assert [m.event.value for m in messages] == ["opened", "updated", "escalated", "acknowledged", "resolved"]
    assert [m.actor for m in messages][3:] == ["claire", "api"]
    assert len({m.message_id for m in messages}) == 5
    paged = await consume(kafka_bootstrap, topic_overrides["terrain.escalations.v1"], expect=1, settle_s=1.0)
    assert len(paged) == 1 and paged[0].key == COMMUNITY.encode()
    esc = EscalationMessage.model_validate_json(paged[0].value)
    assert (esc.incident_id, esc.target.value, esc.level.value) == (iid, "human", "human")
    assert esc.ack_deadline is not None
    assert timedelta(minutes=14) < esc.ack_deadline - esc.occurred_at <= timedelta(minutes=15)
    assert [e.external_id for e in esc.evidence] == ["n1", "n2", "n3"]
