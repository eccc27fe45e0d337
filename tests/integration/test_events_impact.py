"""Field visits end to end and the impact endpoint, on the real broker and PostgreSQL.

A field escalation arrives on the escalations topic, the visit is scheduled over HTTP and closed by an
outcome published on the outcomes topic; scored comments of the visited community and of comparison
communities (with an effect planted after the visit) arrive on the scored topic; the impact endpoint
recovers the effect. A replay and a re-score of the comments leave the rollups as they should be.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.events import engagement
from services.events.app import EventsSettings, build_app
from services.events.domain import field_visit_id
from terrain.contracts import ScoredCommentMessage
from tests.conftest import running
from tests.kafka_helpers import produce
from tests.unit.test_events_impact import TREATED, simulate_comments

pytestmark = pytest.mark.integration

ESCALATIONS = "terrain.escalations.v1"
OUTCOMES = "terrain.events.outcomes.v1"
SCORED = "terrain.comments.scored.v1"
NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
PLANTED = 0.3


async def produce_many(bootstrap: str, topic: str, messages: list[dict[str, Any]]) -> None:
    """Send many JSON messages keyed by community, waiting for all acknowledgements at the end."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, json.dumps(m).encode(), key=m["comment"]["community_id"].encode())
            for m in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def poll(fetch: Any, ready: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await fetch()
        if ready(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


def escalation(event_at: datetime) -> dict[str, Any]:
    return {
        "message_id": "esc-msg-1",
        "occurred_at": (event_at - timedelta(days=3)).isoformat(),
        "producer": "terrain-escalation",
        "escalation_id": "esc-1",
        "incident_id": "inc-1",
        "community_id": TREATED,
        "thread_id": "t1",
        "target": "field",
        "level": "field",
        "reason": "la crise persiste depuis trois jours autour du restaurant",
        "place": "Brasserie du Parc, Lyon",
        "evidence": [{"comment_id": "c-1", "external_id": "x-1", "label": "negative", "score": -0.7,
                      "created_at": (event_at - timedelta(days=4)).isoformat()}],
        # A field the escalation side may add later: ignored here.
        "step": 2,
    }


def metric(text: str, sample: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample + " ")]
    return values[0] if values else 0.0


Rollup = dict[tuple[str, date], tuple[Any, ...]]


async def rollup_rows(url: str) -> Rollup:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT community_id, day, comments, unique_authors, replies, reactions, positive,"
                                " negative, sentiment_sum FROM events_engagement_daily")
    finally:
        await conn.close()
    return {(r["community_id"], r["day"]): tuple(r)[2:] for r in rows}


def expected_rollup(messages: list[dict[str, Any]]) -> Rollup:
    """The Python definition (services/events/engagement.py) applied to the same comments."""
    rows = engagement.rollup(engagement.fact_of(ScoredCommentMessage.model_validate(m)) for m in messages)
    return {k: (v.comments, v.unique_authors, v.replies, v.reactions, v.positive, v.negative, v.sentiment_sum)
            for k, v in rows.items()}


def same(a: Rollup, b: Rollup) -> bool:
    return a.keys() == b.keys() and all(a[k][:-1] == b[k][:-1] and abs(a[k][-1] - b[k][-1]) < 1e-9 for k in a)


async def test_field_escalation_to_visit_to_outcome_and_measured_impact(
    settings_kwargs: dict[str, Any], topic_overrides: dict[str, str], kafka_bootstrap: str, schema_url: str
) -> None:
    messages, event_at = simulate_comments(seed=11, effect=PLANTED, controls=4, days=30, event_day=15,
                                           per_day=(6, 10))
    # The visit is scheduled two days ahead of it; the impact is read weeks later.
    today = [event_at - timedelta(days=2)]
    app = build_app(EventsSettings(**settings_kwargs, events_upkeep_interval_s=0.5),
                    topic_overrides=topic_overrides, clock=lambda: today[0])
    visit_id = field_visit_id("esc-1")
    async with running(app) as client:
        await produce(kafka_bootstrap, topic_overrides[ESCALATIONS], [(TREATED, escalation(event_at))] * 2)
        await produce_many(kafka_bootstrap, topic_overrides[SCORED], messages)

        async def get_visit() -> httpx.Response:
            return await client.get(f"/v1/events/{visit_id}")

        requested = await poll(get_visit, lambda r: r.status_code == 200)
        assert requested.status_code == 200
        visit = requested.json()
        assert (visit["status"], visit["kind"], visit["incident_id"], visit["location"]) == (
            "requested", "field_visit", "inc-1", "Brasserie du Parc, Lyon")
        assert visit["reason"].startswith("la crise persiste") and visit["evidence"][0]["comment_id"] == "c-1"
        opened = await poll(lambda: client.get("/metrics"),
                            lambda r: metric(r.text, 'terrain_events_field_visits_open{status="requested"}') >= 1)
        assert metric(opened.text, 'terrain_events_field_visits_open{status="requested"}') == 1

        # An operator schedules it and names who goes; then someone else is assigned. The body's actor is
        # ignored: the timeline names the caller (here the bootstrap token).
        scheduled = await client.post(f"/v1/events/{visit_id}/schedule", json={
            "starts_at": event_at.isoformat(), "ends_at": (event_at + timedelta(hours=2)).isoformat(),
            "assignee": "Lina", "actor": "marc", "note": "rendez-vous avec le gérant"})
        assert scheduled.status_code == 200 and scheduled.json()["status"] == "scheduled"
        assert scheduled.json()["changed"] is True
        again = await client.post(f"/v1/events/{visit_id}/schedule", json={
            "starts_at": event_at.isoformat(), "ends_at": (event_at + timedelta(hours=2)).isoformat(),
            "assignee": "Lina", "actor": "marc", "note": "rendez-vous avec le gérant"})
        assert again.status_code == 200 and again.headers.get("X-Terrain-Change") == "unchanged"
        assert again.json() == {**scheduled.json(), "changed": False}
        assigned = await client.post(f"/v1/events/{visit_id}/assign", json={"assignee": "Sam", "actor": "marc"})
        assert assigned.json()["assignee"] == "Sam"
        today[0] = NOW

        # The field app closes it by publishing its outcome.
        outcome = {
            "message_id": "out-1", "occurred_at": (event_at + timedelta(hours=3)).isoformat(),
            "producer": "appli-terrain",
            "event": {"id": visit_id, "community_id": TREATED, "kind": "field_visit",
                      "title": "Visite à la Brasserie du Parc", "starts_at": event_at.isoformat(),
                      "outcome": {"attendees": 6, "ambassadors_met": 2, "result": "resolved",
                                  "notes": "excuses, geste commercial"},
                      "follow_ups": ["rappeler le client dans 15 jours"], "actor": "sam"},
        }
        await produce(kafka_bootstrap, topic_overrides[OUTCOMES], [(TREATED, outcome)])
        done = await poll(get_visit, lambda r: r.json()["status"] == "done")
        assert done.json()["status"] == "done" and done.json()["outcome"]["result"] == "resolved"
        assert done.json()["follow_ups"] == ["rappeler le client dans 15 jours"]
        # Closing a done visit again is refused with a clear reason; so is a closing without a result.
        late = await client.post(f"/v1/events/{visit_id}/cancel", json={"actor": "marc", "note": "trop tard"})
        assert late.status_code == 409 and "final" in late.json()["detail"] and late.json()["state"] == "done"

        history = (await client.get(f"/v1/events/{visit_id}/history")).json()["items"]
        assert [(h["from_status"], h["to_status"], h["actor"]) for h in history] == [
            (None, "requested", "terrain-escalation"),
            ("requested", "scheduled", "bootstrap-admin"),
            ("scheduled", "scheduled", "bootstrap-admin"),
            ("scheduled", "done", "sam"),
        ]
        assert history[1]["note"] == "rendez-vous avec le gérant" and history[2]["assignee"] == "Sam"

        # Every comment is in the rollups, as the definition says.
        want = expected_rollup(messages)
        got = await poll(lambda: rollup_rows(schema_url), lambda rows: same(rows, want), timeout_s=60)
        assert same(got, want)

        impact = await client.get(f"/v1/events/{visit_id}/impact")
        assert impact.status_code == 200
        report = impact.json()
        did = report["difference_in_differences"]["mean_sentiment"]
        print(f"end to end: planted {PLANTED:+.3f}, estimate {did['estimate']:+.3f}"
              f" [{did['ci_low']:+.3f}, {did['ci_high']:+.3f}], verdict {report['verdict']}")
        assert did["ci_low"] <= PLANTED <= did["ci_high"] and did["ci_low"] > 0
        assert report["comparison_communities"] == ["c1", "c2", "c3", "c4"]
        assert report["comparison_limited_to_scope"] is False
        assert report["verdict"] == "improved" and report["status"] == "done"
        assert len(report["series"]["days"]) == 2 * 14 + 1
        missing = await client.get("/v1/events/nope/impact")
        assert missing.status_code == 404

        # A replay of every comment, plus a re-score of some, counts nothing twice.
        rescored = [
            {**m, "message_id": m["message_id"] + "-rescored",
             "scored_at": (datetime.fromisoformat(m["scored_at"]) + timedelta(hours=1)).isoformat(),
             "sentiment": {**m["sentiment"], "score": -m["sentiment"]["score"], "label": "neutral",
                           "model_version": "v2"}}
            for m in messages[:50]
        ]
        await produce_many(kafka_bootstrap, topic_overrides[SCORED], messages + rescored)
        want = expected_rollup(messages + rescored)
        got = await poll(lambda: rollup_rows(schema_url), lambda rows: same(rows, want), timeout_s=60)
        assert same(got, want)

        text = (await poll(lambda: client.get("/metrics"), lambda r: metric(
            r.text, 'terrain_events_impact_estimates{kind="field_visit",verdict="improved"}') == 1)).text
    assert metric(text, 'terrain_events_impact_estimates{kind="field_visit",verdict="improved"}') == 1
    assert metric(text, 'terrain_events_field_visits_open{status="requested"}') == 0
    assert metric(text, 'terrain_events_escalation_to_visit_seconds_count{step="done"}') >= 1
    assert metric(text, 'terrain_events_closed_total{kind="field_visit",result="resolved"}') >= 1
    assert metric(text, 'terrain_events_engagement_comments_total{outcome="redelivered"}') >= len(messages)


async def test_visit_commands_over_http_validate_and_answer_clearly(
    settings_kwargs: dict[str, Any], topic_overrides: dict[str, str]
) -> None:
    app = build_app(EventsSettings(**settings_kwargs), topic_overrides=topic_overrides, clock=lambda: NOW)
    later = (NOW + timedelta(days=3)).isoformat()
    async with running(app) as client:
        # A planned ambassador event, with an organiser, logged under the caller's id.
        body = {"id": "amb-1", "community_id": "voyageurs", "kind": "ambassador_event",
                "title": "Soirée des ambassadeurs", "starts_at": later, "organiser": "Équipe Lyon"}
        created = await client.post("/v1/events", json=body)
        retried = await client.post("/v1/events", json=body)
        no_result = await client.post("/v1/events/amb-1/close", json={"actor": "marc", "outcome": {}})
        # No actor in the body: none is needed, the caller is the actor.
        closed = await client.post("/v1/events/amb-1/close", json={
            "outcome": {"attendees": 25, "ambassadors_met": 8, "result": "success"}, "follow_ups": ["album photo"]})
        closed_again = await client.post("/v1/events/amb-1/close", json={
            "outcome": {"attendees": 25, "ambassadors_met": 8, "result": "success"}, "follow_ups": ["album photo"]})
        reopen = await client.post("/v1/events/amb-1/schedule", json={"actor": "marc", "starts_at": later})
        unknown = await client.post("/v1/events/nope/assign", json={"actor": "marc", "assignee": "Sam"})
        bad_result = await client.post("/v1/events", json={**body, "id": "amb-2", "outcome": {"result": "great"}})
        planned = await client.get("/v1/events", params={"status": "scheduled"})
        done = await client.get("/v1/events", params={"status": "done", "kind": "ambassador_event"})
        impact = await client.get("/v1/events/amb-1/impact")
    assert created.status_code == 201 and created.json()["status"] == "scheduled"
    assert created.json()["organiser"] == "Équipe Lyon" and "actor" not in created.json()
    assert retried.status_code == 200 and retried.json() == {**created.json(), "changed": False}
    assert no_result.status_code == 422 and no_result.json()["errors"][0]["field"] == "outcome.result"
    assert closed.status_code == 200 and closed.json()["status"] == "done" and closed.json()["changed"] is True
    assert closed_again.status_code == 200 and closed_again.json() == {**closed.json(), "changed": False}
    assert reopen.status_code == 409 and "final" in reopen.json()["detail"] and reopen.json()["state"] == "done"
    assert unknown.status_code == 404
    assert bad_result.status_code == 422 and "outcome.result" in bad_result.json()["detail"]
    assert planned.json()["items"] == [] and [e["id"] for e in done.json()["items"]] == ["amb-1"]
    # No comments at all: the endpoint answers, and says what it cannot conclude.
    codes = {limit["code"] for limit in impact.json()["limitations"]}
    assert impact.status_code == 200 and impact.json()["verdict"] == "inconclusive"
    assert {"too_little_data", "no_comparison_group"} <= codes


async def test_migration_002_gives_stored_events_a_status(schema_url: str) -> None:
    """Events stored before the lifecycle existed get the status their data implies."""
    from importlib import resources

    folder = resources.files("services.events").joinpath("migrations")
    conn = await asyncpg.connect(schema_url)
    try:
        await conn.execute(folder.joinpath("001_events.sql").read_text(encoding="utf-8"))
        await conn.execute(
            """INSERT INTO events_log (id, community_id, kind, title, starts_at, result, notes, origin,
                   recorded_at, updated_at) VALUES
               ('planned-visit', 'c', 'field_visit', 't', now() - interval '1 day', 'pending', 'why',
                'escalation', now() - interval '1 day', now()),
               ('reported', 'c', 'apero', 't', now() - interval '3 days', 'success', NULL, 'http', now(), now()),
               ('future', 'c', 'meetup', 't', now() + interval '3 days', 'pending', NULL, 'topic', now(), now()),
               ('dropped', 'c', 'workshop', 't', now(), 'cancelled', NULL, 'http', now(), now())"""
        )
        await conn.execute(folder.joinpath("002_visits_engagement.sql").read_text(encoding="utf-8"))
        stored = await conn.fetch("SELECT id, status, reason FROM events_log")
        rows = {r["id"]: (r["status"], r["reason"]) for r in stored}
        # New kinds and results are accepted now.
        await conn.execute(
            """INSERT INTO events_log (id, community_id, kind, title, starts_at, result, origin, recorded_at,
                   updated_at, status) VALUES ('new', 'c', 'conference', 't', now(), 'improved', 'http', now(),
                   now(), 'done')"""
        )
    finally:
        await conn.close()
    assert rows == {
        "planned-visit": ("requested", "why"),
        "reported": ("done", None),
        "future": ("scheduled", None),
        "dropped": ("cancelled", None),
    }
