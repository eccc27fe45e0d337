"""Events against the real broker and PostgreSQL: HTTP upsert, idempotent topics, field visits, DLQ."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import pytest

from services.events.app import EventsSettings, build_app
from services.events.domain import field_visit_id, outcome_event_id
from tests.conftest import running
from tests.kafka_helpers import consume, headers_of, produce

pytestmark = pytest.mark.integration

OUTCOMES = "terrain.events.outcomes.v1"
ESCALATIONS = "terrain.escalations.v1"


def settings(kwargs: dict[str, Any]) -> EventsSettings:
    """The shared test settings (their consumer-group prefix is unique to the test)."""
    return EventsSettings(**kwargs)


def event(**kw: Any) -> dict[str, Any]:
    return {
        "community_id": "voyageurs",
        "kind": "apero",
        "title": "Apéro mensuel des blogueurs",
        "starts_at": "2026-11-20T18:00:00Z",
        "ends_at": "2026-11-20T21:00:00Z",
        "location": "Lyon",
        "outcome": {"attendees": 40, "ambassadors_met": 5, "result": "success", "notes": "bonne ambiance"},
        **kw,
    }


def outcome_message(message_id: str, **kw: Any) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "occurred_at": "2026-11-21T09:00:00Z",
        "producer": "field-app",
        "event": event(**kw),
    }


def escalation(message_id: str, escalation_id: str, target: str, incident_id: str) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "occurred_at": "2026-11-24T08:00:00Z",
        "producer": "terrain-escalation",
        "escalation_id": escalation_id,
        "incident_id": incident_id,
        "community_id": "restos",
        "thread_id": "post-7",
        "target": target,
        "level": target,
        "reason": "the crisis persists",
        "place": "Brasserie du Parc" if target == "field" else None,
    }


async def wait_for_items(
    client: httpx.AsyncClient, params: dict[str, str], count: int, timeout_s: float = 20.0
) -> list[dict[str, Any]]:
    """Poll the list endpoint until it holds `count` events (the consumers work asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = await client.get("/v1/events", params=params)
        assert r.status_code == 200
        items: list[dict[str, Any]] = r.json()["items"]
        if len(items) >= count or time.monotonic() > deadline:
            return items
        await asyncio.sleep(0.2)


async def wait_for_metric(client: httpx.AsyncClient, sample: str, timeout_s: float = 5.0) -> float:
    """A sample's value from /metrics, polled briefly: counters move just after the transaction commits."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = (await client.get("/metrics")).text
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample + " ")]
        if values or time.monotonic() > deadline:
            return values[0] if values else 0.0
        await asyncio.sleep(0.1)


async def test_post_then_get_and_upsert(settings_kwargs, topic_overrides):
    app = build_app(settings(settings_kwargs), topic_overrides=topic_overrides)
    async with running(app) as client:
        created = await client.post("/v1/events", json=event(id="apero-nov"))
        no_id = await client.post(
            "/v1/events", json=event(title="Meetup", kind="meetup", starts_at="2026-11-27T18:00:00Z", ends_at=None)
        )
        # The attendance is corrected later; notes, ambassadors and result are left out.
        updated = await client.post("/v1/events", json=event(id="apero-nov", outcome={"attendees": 42}))
        again = await client.post("/v1/events", json=event(id="apero-nov", outcome={"attendees": 42}))
        fetched = await client.get("/v1/events/apero-nov")
        listed = await client.get("/v1/events", params={"community_id": "voyageurs"})
        meetups = await client.get("/v1/events", params={"kind": "meetup"})
        paged = await client.get("/v1/events", params={"community_id": "voyageurs", "limit": 1, "offset": 1})
        other = await client.get("/v1/events", params={"community_id": "nobody"})
        missing = await client.get("/v1/events/nope")
        conflict = await client.post("/v1/events", json=event(id="apero-nov", community_id="restos"))
    assert created.status_code == 201 and created.json()["changed"] is True
    body = created.json()
    assert body["id"] == "apero-nov" and body["recorded_at"] == body["updated_at"]
    assert no_id.status_code == 201 and len(no_id.json()["id"]) == 36  # a fresh uuid
    assert updated.status_code == 200 and updated.json()["changed"] is True
    assert updated.json()["outcome"] == {
        "attendees": 42,
        "ambassadors_met": 5,
        "result": "success",
        "notes": "bonne ambiance",
    }
    assert updated.json()["recorded_at"] == body["recorded_at"]
    # A repost of the same write changes nothing, not even updated_at: the same 200, saying so.
    assert again.status_code == 200 and again.json() == {**updated.json(), "changed": False}
    assert fetched.status_code == 200 and "changed" not in fetched.json()
    assert {**fetched.json(), "changed": True} == updated.json()
    # Newest start first: the meetup (27th) before the apéro (20th).
    assert [e["title"] for e in listed.json()["items"]] == ["Meetup", "Apéro mensuel des blogueurs"]
    assert listed.json()["total"] == 2 and listed.json()["next"] is None
    assert [e["kind"] for e in meetups.json()["items"]] == ["meetup"]
    assert [e["id"] for e in paged.json()["items"]] == ["apero-nov"]
    assert other.json() == {"items": [], "total": 0, "next": None}
    assert missing.status_code == 404
    assert conflict.status_code == 409 and "community_id" in conflict.json()["detail"]


async def test_bad_input_gets_422_naming_the_field_and_no_token_401(settings_kwargs, topic_overrides):
    app = build_app(settings(settings_kwargs), topic_overrides=topic_overrides)
    async with running(app) as client:
        bad_kind = await client.post("/v1/events", json=event(kind="party"))
        naive = await client.post("/v1/events", json=event(starts_at="2026-11-20T18:00:00"))
        negative = await client.post("/v1/events", json=event(outcome={"attendees": -1}))
        bad_filter = await client.get("/v1/events", params={"kind": "party"})
        # Moving the start past the stored end without a new end would leave an impossible event.
        await client.post("/v1/events", json=event(id="e1"))
        moved = await client.post("/v1/events", json=event(id="e1", starts_at="2026-11-22T18:00:00Z", ends_at=None))
        no_token = await client.post("/v1/events", json=event(), headers={"Authorization": ""})
        wrong_token = await client.get("/v1/events", headers={"Authorization": "Bearer nope"})
        listed = await client.get("/v1/events")
    assert bad_kind.status_code == 422 and "kind" in bad_kind.json()["detail"]
    assert naive.status_code == 422 and "starts_at" in naive.json()["detail"]
    assert negative.status_code == 422 and "outcome.attendees" in negative.json()["detail"]
    assert bad_filter.status_code == 422 and "kind" in bad_filter.json()["detail"]
    assert moved.status_code == 422 and moved.json()["errors"][0]["field"] == "ends_at"
    assert no_token.status_code == 401 and wrong_token.status_code == 401
    # Nothing refused was stored.
    assert [e["id"] for e in listed.json()["items"]] == ["e1"]


async def test_outcome_message_twice_stores_one_event(settings_kwargs, topic_overrides, kafka_bootstrap):
    app = build_app(settings(settings_kwargs), topic_overrides=topic_overrides)
    topic = topic_overrides[OUTCOMES]
    event_id = outcome_event_id(None, "m-1")
    async with running(app) as client:
        await produce(kafka_bootstrap, topic, [("voyageurs", outcome_message("m-1"))] * 2)
        items = await wait_for_items(client, {"community_id": "voyageurs"}, 1)
        assert [e["id"] for e in items] == [event_id]
        # Someone corrects the attendance over HTTP; a late redelivery of m-1 must not undo it.
        fix = await client.post("/v1/events", json=event(id=event_id, outcome={"attendees": 44}))
        assert fix.status_code == 200
        # m-2 follows m-1 on the same key, hence the same partition: once m-2 is stored, m-1 was processed.
        await produce(
            kafka_bootstrap,
            topic,
            [
                ("voyageurs", outcome_message("m-1")),
                ("voyageurs", outcome_message("m-2", title="Apéro de décembre")),
            ],
        )
        items = await wait_for_items(client, {"community_id": "voyageurs"}, 2)
        stored = (await client.get(f"/v1/events/{event_id}")).json()
    assert sorted(e["id"] for e in items) == sorted([event_id, outcome_event_id(None, "m-2")])
    assert stored["outcome"]["attendees"] == 44 and stored["origin"] == "topic"


async def test_field_escalation_plans_a_pending_visit(settings_kwargs, topic_overrides, kafka_bootstrap):
    app = build_app(settings(settings_kwargs), topic_overrides=topic_overrides)
    topic = topic_overrides[ESCALATIONS]
    async with running(app) as client:
        # The human escalation goes first on the same partition: when the visit shows, it was consumed.
        await produce(
            kafka_bootstrap,
            topic,
            [
                ("restos", escalation("x-1", "esc-h", "human", "inc-1")),
                ("restos", escalation("x-2", "esc-f", "field", "inc-1")),
                ("restos", escalation("x-2", "esc-f", "field", "inc-1")),
            ],
        )
        items = await wait_for_items(client, {"incident_id": "inc-1"}, 1)
        community = await client.get("/v1/events", params={"community_id": "restos"})
        ignored = await wait_for_metric(client, 'terrain_events_escalations_total{outcome="ignored",target="human"}')
    assert len(items) == 1
    visit = items[0]
    assert visit["id"] == field_visit_id("esc-f")
    assert (visit["kind"], visit["outcome"]["result"], visit["incident_id"]) == ("field_visit", "pending", "inc-1")
    assert (visit["location"], visit["escalation_id"], visit["origin"]) == ("Brasserie du Parc", "esc-f", "escalation")
    # The human escalation planned nothing, and the repeated field one planned the visit once.
    assert len(community.json()["items"]) == 1
    assert ignored >= 1


async def test_malformed_outcome_goes_to_the_dead_letter_topic(
    settings_kwargs, topic_overrides, kafka_bootstrap, schema_url
):
    app = build_app(settings(settings_kwargs), topic_overrides=topic_overrides)
    topic = topic_overrides[OUTCOMES]
    async with running(app) as client:
        taken = await client.post("/v1/events", json=event(id="shared", community_id="restos"))
        assert taken.status_code == 201
        await produce(
            kafka_bootstrap,
            topic,
            [
                ("voyageurs", outcome_message("m-bad", kind="party")),
                ("voyageurs", b"{not json"),
                # Valid, but its id belongs to another community's event: refused by the merge rules.
                ("voyageurs", outcome_message("m-clash", id="shared")),
                ("voyageurs", outcome_message("m-ok")),
            ],
        )
        dlq = await consume(kafka_bootstrap, topic_overrides[OUTCOMES + ".dlq"], expect=3, settle_s=0.5)
        items = await wait_for_items(client, {"community_id": "voyageurs"}, 1)
        shared = (await client.get("/v1/events/shared")).json()
    assert len(dlq) == 3
    reasons = [headers_of(r)["terrain-dlq-reason"] for r in dlq]
    assert any("event.kind" in reason for reason in reasons)
    assert any("conflict" in reason and "community_id" in reason for reason in reasons)
    assert all(headers_of(r)["terrain-dlq-origin-topic"] == topic for r in dlq)
    assert all(r.key == b"voyageurs" for r in dlq)
    assert [e["id"] for e in items] == [outcome_event_id(None, "m-ok")]
    assert shared["community_id"] == "restos"
    # The refused message is not recorded as processed: read again, it is refused again, not skipped.
    conn = await asyncpg.connect(schema_url)
    try:
        claimed = {r["message_id"] for r in await conn.fetch("SELECT message_id FROM terrain_processed_messages")}
    finally:
        await conn.close()
    assert claimed == {"m-ok"}


async def test_a_control_character_in_an_id_or_a_location_is_refused_naming_the_field(settings_kwargs, topic_overrides):
    app = build_app(settings(settings_kwargs), topic_overrides=topic_overrides)
    async with running(app) as client:
        community = await client.post("/v1/events", json=event(community_id="voyageurs\n"))
        location = await client.post("/v1/events", json=event(location="Lyon\u2028Centre"))
        incident = await client.post("/v1/events", json=event(incident_id="inc\u202e1"))
        listed = (await client.get("/v1/events")).json()["items"]
    assert community.status_code == 422 and "community_id" in community.text and "U+000A" in community.text
    assert location.status_code == 422 and "location" in location.text and "U+2028" in location.text
    assert incident.status_code == 422 and "incident_id" in incident.text and "U+202E" in incident.text
    assert listed == []


async def test_events_stored_before_ids_refused_hidden_characters_are_read_after_the_migration(
    settings_kwargs, topic_overrides
):
    from services.events import repository
    from terrain.db import create_pool, migrate

    app = build_app(settings(settings_kwargs), topic_overrides=topic_overrides)
    async with running(app) as client:
        assert (await client.post("/v1/events", json=event(id="legacy", incident_id="inc-1"))).status_code == 201
    pool = await create_pool(settings_kwargs["database_url"])
    try:
        # A row as an earlier release could store it (its ids only had to hold a non-space character), and the
        # migration not yet applied.
        await pool.execute("""UPDATE events_log SET community_id = E'voyageurs\\tlyon', incident_id = E'inc\\u202e1',
                                  location = E'Lyon\\nCentre' WHERE id = 'legacy'""")
        await pool.execute("DELETE FROM terrain_schema_migrations WHERE component = 'events' AND version = 3")
        assert await migrate(pool, "events", "services.events") == ["003_hidden_characters.sql"]
        stored = await repository.get(pool, "legacy")
    finally:
        await pool.close()
    assert stored is not None
    assert (stored.community_id, stored.incident_id, stored.location) == (
        "voyageurs\ufffdlyon", "inc\ufffd1", "Lyon\ufffdCentre")
