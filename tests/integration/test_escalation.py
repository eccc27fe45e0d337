"""Escalation against the real broker and PostgreSQL: incidents, cascade, steps and timers across replicas and
restarts, notifications to a real webhook, silences, notes and the operator API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from services.escalation import repository
from services.escalation.app import EscalationSettings, build_app
from services.escalation.domain import Incident
from services.escalation.policy import CommunityPolicy, parse_policy
from terrain.contracts import (
    Comment,
    EscalationMessage,
    IncidentLevel,
    IncidentMessage,
    IncidentState,
    ScoredCommentMessage,
    Sentiment,
    SentimentLabel,
    comment_id_for,
)
from tests.conftest import running
from tests.kafka_helpers import consume, produce
from tests.servers import HookServer

pytestmark = pytest.mark.integration

SCORED = "terrain.comments.scored.v1"
COMMUNITY = "resto-lyon"


def created(minutes_ago: float = 10) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes_ago)


def scored(ext: str, label: SentimentLabel = SentimentLabel.negative, *, thread: str = "post-1",
           message_id: str | None = None, removed: bool = False, at: datetime | None = None,
           community: str = COMMUNITY) -> dict[str, Any]:
    score = -0.8 if label is SentimentLabel.negative else 0.6
    when = at or created()
    msg = ScoredCommentMessage(
        message_id=message_id or f"scored-{ext}",
        occurred_at=when,
        producer="terrain-sentiment",
        comment=Comment(
            source="facebook", external_id=ext, community_id=community, thread_id=thread,
            text="Service déplorable, 45 minutes d'attente et un plat froid. Je suis furieuse !",
            created_at=when, comment_id=comment_id_for("facebook", ext), lang="fr",
            action="removed" if removed else "created",
        ),
        sentiment=Sentiment(label=label, score=score, confidence=0.9, lang="fr", model_version="test"),
        scored_at=when,
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
            (COMMUNITY, scored("old", thread="post-3", at=created(60 * 24 * 8))),  # a week old: recorded only
            # Counted, not evidence; once it shows, every message before it was processed.
            (COMMUNITY, scored("thanks", SentimentLabel.positive)),
        ])

        def counted(n: int) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
            async def check() -> list[dict[str, Any]]:
                found = await incidents(client)
                return found if found and found[0]["comment_count"] == n else []
            return check

        await wait_for(counted(2), "the incident to count the positive reply")
        await produce(kafka_bootstrap, topic, [
            (COMMUNITY, scored("c1")),
            (COMMUNITY, scored("c1", message_id="late-c1")),
            (COMMUNITY, scored("thanks-2", SentimentLabel.positive)),
        ])
        found = await wait_for(counted(3), "the incident to count the second positive reply")
        detail = (await client.get(f"/v1/incidents/{found[0]['id']}")).json()
    assert len(found) == 1
    inc = found[0]
    assert (inc["thread_id"], inc["state"], inc["level"], inc["kind"]) == ("post-1", "open", "respond", "thread")
    assert (inc["comment_count"], inc["negative_count"]) == (3, 1)
    assert inc["language"] == "fr" and "mérite une réponse" in inc["reason"]
    assert [a["code"] for a in inc["actions"]] == ["reply_public", "message_private"]
    assert inc["recommended_actions"][0].startswith("Répondre publiquement au commentaire c1")
    assert [e["external_id"] for e in detail["evidence"]] == ["c1"]
    assert [t["event"] for t in detail["timeline"]] == ["opened"]
    assert detail["policy"]["respond"]["min_confidence"] == 0.5
    out = await consume(kafka_bootstrap, topic_overrides["terrain.incidents.v1"], expect=1, settle_s=1.0)
    assert [IncidentMessage.model_validate_json(r.value).event.value for r in out] == ["opened"]
    assert all(r.key == COMMUNITY.encode() for r in out)


async def test_cascade_escalates_then_ack_note_and_resolve(settings_kwargs, topic_overrides, kafka_bootstrap):
    app = build_app(EscalationSettings(**settings_kwargs), topic_overrides=topic_overrides)
    async with running(app) as client:
        await produce(kafka_bootstrap, topic_overrides[SCORED],
                      [(COMMUNITY, scored(f"n{i}", at=created(10 - i))) for i in range(3)])

        async def escalated() -> list[dict[str, Any]]:
            return await incidents(client, level="human")

        inc = (await wait_for(escalated, "the cascade to escalate"))[0]
        assert inc["negative_count"] == 3 and inc["state"] == "open"
        assert inc["actions"][0]["code"] == "page"
        iid = inc["id"]
        since = (await client.get("/v1/incidents", params={"since": "2999-01-01T00:00:00Z"})).json()["items"]
        bad_since = await client.get("/v1/incidents", params={"since": "yesterday"})

        acked = await client.post(f"/v1/incidents/{iid}/ack", json={"actor": "claire", "note": "on it"})
        again = await client.post(f"/v1/incidents/{iid}/ack")
        noted = await client.post(f"/v1/incidents/{iid}/notes", json={"actor": "claire", "text": "called the chef"})
        empty_note = await client.post(f"/v1/incidents/{iid}/notes", json={"text": ""})
        note_unknown = await client.post("/v1/incidents/nope/notes", json={"text": "x"})
        resolved = await client.post(f"/v1/incidents/{iid}/resolve")  # no body
        twice = await client.post(f"/v1/incidents/{iid}/resolve", json={"actor": "claire"})
        ack_resolved = await client.post(f"/v1/incidents/{iid}/ack")
        unknown = await client.post("/v1/incidents/nope/resolve")
        detail = (await client.get(f"/v1/incidents/{iid}")).json()
        unauth = await client.get("/v1/incidents", headers={"Authorization": "Bearer wrong"})
        exported = (await client.get("/metrics")).text

    assert since == [] and bad_since.status_code == 422
    assert acked.status_code == 200 and acked.json()["state"] == "acknowledged" and acked.json()["changed"] is True
    assert acked.json()["ack_deadline"] is None
    # A repeat whose effect is in place: 200, the current state, changed false (and nothing on the timeline).
    assert again.status_code == 200 and again.json()["state"] == "acknowledged" and again.json()["changed"] is False
    assert noted.status_code == 201 and empty_note.status_code == 422 and note_unknown.status_code == 404
    assert resolved.status_code == 200 and resolved.json()["state"] == "resolved" and resolved.json()["changed"]
    assert twice.status_code == 200 and twice.json()["state"] == "resolved" and twice.json()["changed"] is False
    assert twice.json()["resolved_at"] == resolved.json()["resolved_at"]
    # A command the state forbids: 409 naming the state.
    assert ack_resolved.status_code == 409 and ack_resolved.json()["state"] == "resolved"
    assert "incident is resolved" in ack_resolved.json()["detail"]
    assert unknown.status_code == 404 and unauth.status_code == 401
    assert 'terrain_escalation_escalations_total{target="human",trigger="cascade"}' in exported
    timeline = detail["timeline"]
    assert [t["event"] for t in timeline] == ["opened", "updated", "escalated", "acknowledged", "note", "resolved"]
    # The actor is the caller's identity (here the bootstrap token), never the body's "claire".
    assert timeline[3]["detail"] == "acknowledged by bootstrap-admin: on it"
    assert timeline[4]["detail"] == "called the chef"
    assert {t["actor"] for t in timeline[3:]} == {"bootstrap-admin"}

    lifecycle = await consume(kafka_bootstrap, topic_overrides["terrain.incidents.v1"], expect=5, settle_s=1.0)
    messages = [IncidentMessage.model_validate_json(r.value) for r in lifecycle]
    # The note is on the timeline only: it publishes nothing.
    assert [m.event.value for m in messages] == ["opened", "updated", "escalated", "acknowledged", "resolved"]
    paged = await consume(kafka_bootstrap, topic_overrides["terrain.escalations.v1"], expect=1, settle_s=1.0)
    assert len(paged) == 1 and paged[0].key == COMMUNITY.encode()
    esc = EscalationMessage.model_validate_json(paged[0].value)
    assert (esc.incident_id, esc.target.value, esc.trigger, esc.step) == (iid, "human", "cascade", 1)
    assert esc.ack_deadline is not None
    assert timedelta(minutes=14) < esc.ack_deadline - esc.occurred_at <= timedelta(minutes=15)
    assert [e.external_id for e in esc.evidence] == ["n0", "n1", "n2"]


def stepped_policy(hook: HookServer, wait: str = "1500ms") -> Any:
    return parse_policy({
        "people": {
            "alice": {"name": "alice", "webhook": hook.url("/alice")},
            "bob": {"name": "bob", "webhook": hook.url("/bob")},
        },
        "defaults": {
            "steps": [{"notify": ["person:alice"], "wait": wait}, {"notify": ["person:bob"], "wait": wait}],
            "field": {"on_place": False, "after_last_step": True},
            "repeat_interval": "1h",
        },
    })


async def _timer_rows(url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch("SELECT kind, fence, fired_at, outcome FROM escalation_timers ORDER BY id")
    finally:
        await conn.close()


@pytest.fixture
async def hook():
    server = HookServer()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        await listener.wait_closed()


async def test_two_replicas_page_each_step_once_then_ask_for_the_field(
    settings_kwargs, topic_overrides, kafka_bootstrap, hook
):
    """Nobody acknowledges: alice, then bob, then a field request; each once although two replicas run."""
    settings = EscalationSettings(**settings_kwargs, escalation_timer_interval_s=0.2)
    policy = stepped_policy(hook)
    one = build_app(settings, topic_overrides=topic_overrides, policies=policy)
    two = build_app(settings, topic_overrides=topic_overrides, policies=policy)
    async with running(one) as client, running(two):
        await produce(kafka_bootstrap, topic_overrides[SCORED],
                      [(COMMUNITY, scored(f"n{i}", at=created(10 - i))) for i in range(3)])

        async def field_requested() -> list[dict[str, Any]]:
            return await incidents(client, level="field")

        (inc,) = await wait_for(field_requested, "the policy to run out into a field request", timeout_s=30)
        await asyncio.sleep(1.0)  # let both replicas' timer loops run past the deadlines once more
        detail = (await client.get(f"/v1/incidents/{inc['id']}")).json()
    delivered = [r.path for r in hook.requests if r.status < 300]
    assert sorted(delivered) == ["/alice", "/bob"], delivered
    assert sorted(n["channel"] for n in detail["notifications"]) == ["person:alice", "person:bob"]
    assert all(n["state"] == "sent" for n in detail["notifications"])
    escalations = await consume(kafka_bootstrap, topic_overrides["terrain.escalations.v1"], expect=3, settle_s=1.5)
    got = [EscalationMessage.model_validate_json(r.value) for r in escalations]
    assert [(e.target.value, e.trigger, e.step) for e in got] == [
        ("human", "cascade", 1), ("human", "ack_timeout", 2), ("field", "policy_end", None),
    ]
    assert got[0].recipients == ["alice"] and got[1].recipients == ["bob"]
    timers = await _timer_rows(settings_kwargs["database_url"])
    step_timers = [t for t in timers if t["kind"] == "step"]
    # Two step deadlines fired (step 1, step 2), the reminder is pending, each fired exactly once.
    assert [t["fence"] for t in step_timers] == [1, 2, 3]
    assert [t["fired_at"] is not None for t in step_timers] == [True, True, False]


async def test_a_timer_due_while_the_service_is_down_fires_once_after_restart(
    settings_kwargs, topic_overrides, kafka_bootstrap, hook
):
    settings = EscalationSettings(**settings_kwargs, escalation_timer_interval_s=0.2)
    # The step waits long enough that a slow shutdown of the first replica cannot reach its deadline.
    policy = stepped_policy(hook, wait="6s")
    async with running(build_app(settings, topic_overrides=topic_overrides, policies=policy)) as client:
        await produce(kafka_bootstrap, topic_overrides[SCORED],
                      [(COMMUNITY, scored(f"n{i}", at=created(10 - i))) for i in range(3)])
        await wait_for(lambda: incidents(client, level="human"), "the first page")
    assert [r.path for r in hook.requests] == ["/alice"]
    await asyncio.sleep(6.5)  # the deadline passes while no replica runs
    assert [r.path for r in hook.requests] == ["/alice"]
    async with running(build_app(settings, topic_overrides=topic_overrides, policies=policy)):
        async def bob_paged() -> bool:
            return any(r.path == "/bob" for r in hook.requests)

        await wait_for(bob_paged, "the overdue step to fire after the restart")
        await asyncio.sleep(1.0)
    assert [r.path for r in hook.requests] == ["/alice", "/bob"]


async def test_silence_mutes_pages_until_expired(settings_kwargs, topic_overrides, kafka_bootstrap, hook):
    settings = EscalationSettings(**settings_kwargs)
    app = build_app(settings, topic_overrides=topic_overrides, policies=stepped_policy(hook, wait="1h"))
    async with running(app) as client:
        bad = await client.post("/v1/silences", json={"matchers": {}, "created_by": "c", "comment": "x",
                                                       "duration_minutes": 5})
        past = await client.post("/v1/silences", json={
            "matchers": {"community_id": COMMUNITY}, "created_by": "c", "comment": "x",
            "ends_at": "2020-01-01T00:00:00Z"})
        unknown_key = await client.post("/v1/silences", json={
            "matchers": {"author": "x"}, "created_by": "c", "comment": "x", "duration_minutes": 5})
        made = await client.post("/v1/silences", json={
            "matchers": {"community_id": COMMUNITY, "thread_id": "post-1"}, "created_by": "claire",
            "comment": "chef already answering on the page", "duration_minutes": 60})
        assert made.status_code == 201, made.text
        sid = made.json()["id"]
        listed = (await client.get("/v1/silences")).json()["items"]
        await produce(kafka_bootstrap, topic_overrides[SCORED],
                      [(COMMUNITY, scored(f"n{i}", at=created(10 - i))) for i in range(3)]
                      + [(COMMUNITY, scored(f"m{i}", thread="post-2", at=created(10 - i))) for i in range(3)])

        async def both_human() -> list[dict[str, Any]]:
            found = await incidents(client, level="human")
            return found if len(found) == 2 else []

        found = await wait_for(both_human, "both threads to escalate")
        muted_id = next(i["id"] for i in found if i["thread_id"] == "post-1")
        muted_detail = (await client.get(f"/v1/incidents/{muted_id}")).json()
        expired = await client.delete(f"/v1/silences/{sid}", params={"actor": "claire"})
        expired_again = await client.delete(f"/v1/silences/{sid}")
        gone = await client.delete("/v1/silences/nope")
        active_after = (await client.get("/v1/silences")).json()["items"]
        await asyncio.sleep(1.0)
    assert bad.status_code == 422 and past.status_code == 422 and unknown_key.status_code == 422
    assert [s["id"] for s in listed] == [sid] and listed[0]["active"] is True
    assert any(t["event"] == "muted" and sid in t["detail"] for t in muted_detail["timeline"])
    assert muted_detail["notifications"] == []
    # Only the unsilenced thread paged alice.
    assert [r.path for r in hook.requests] == ["/alice"]
    assert expired.status_code == 200 and expired.json()["active"] is False and expired.json()["changed"] is True
    assert expired_again.status_code == 200 and expired_again.json()["changed"] is False
    assert expired_again.json()["expired_at"] == expired.json()["expired_at"]
    assert gone.status_code == 404 and active_after == []
    paged = await consume(kafka_bootstrap, topic_overrides["terrain.escalations.v1"], expect=1, settle_s=1.0)
    assert [EscalationMessage.model_validate_json(r.value).thread_id for r in paged] == ["post-2"]


async def test_a_silence_matcher_with_a_control_character_is_refused_naming_the_field(settings_kwargs, topic_overrides):
    app = build_app(EscalationSettings(**settings_kwargs), topic_overrides=topic_overrides)
    silence = {"created_by": "claire", "comment": "x", "duration_minutes": 5}
    async with running(app) as client:
        newline = await client.post("/v1/silences", json={**silence, "matchers": {"community_id": "resto\nlyon"}})
        bidi = await client.post("/v1/silences", json={**silence, "matchers": {"thread_id": "post-1\u202e"}})
        listed = (await client.get("/v1/silences")).json()["items"]
    assert newline.status_code == 422 and "community_id" in newline.text and "U+000A" in newline.text
    assert bidi.status_code == 422 and "thread_id" in bidi.text and "U+202E" in bidi.text
    assert listed == []


async def test_lists_say_how_many_there_are_and_page_with_a_cursor(settings_kwargs, topic_overrides):
    app = build_app(EscalationSettings(**settings_kwargs), topic_overrides=topic_overrides)
    at = datetime.now(UTC)
    # 120 incidents of the community, 7 at a time sharing one updated_at (a batch's incidents do): pages end
    # inside ties. And 5 of another community, which a filter on the first leaves out of the total.
    stored = [
        Incident(id=f"inc-{i:03d}", community_id=community, thread_id=f"t-{i}", level=IncidentLevel.respond,
                 reason="r", state=IncidentState.open, opened_at=at, updated_at=at - timedelta(seconds=i // 7),
                 policy=CommunityPolicy(), language="fr")
        for i, community in [*((i, COMMUNITY) for i in range(120)), *((i, "resto-paris") for i in range(120, 125))]
    ]
    async with running(app) as client:
        async with app.state.runtime.pool.acquire() as conn:
            await repository.save_incidents(conn, stored)
        pages: list[dict[str, Any]] = []
        params: dict[str, Any] = {"community_id": COMMUNITY}
        while True:
            page = (await client.get("/v1/incidents", params=params)).json()
            pages.append(page)
            if page["next"] is None:
                break
            params = {"community_id": COMMUNITY, "cursor": page["next"]}
        everything = (await client.get("/v1/incidents", params={"limit": 500})).json()
        by_offset = (await client.get("/v1/incidents", params={"community_id": COMMUNITY, "offset": 100})).json()
        too_many = await client.get("/v1/incidents", params={"limit": 501})
        garbled = await client.get("/v1/incidents", params={"cursor": "not-a-cursor"})
        both = await client.get("/v1/incidents", params={"cursor": pages[0]["next"], "offset": 3})

        for i in range(7):
            made = await client.post("/v1/silences", json={
                "matchers": {"community_id": COMMUNITY, "thread_id": f"post-{i}"}, "duration_minutes": 30,
                "comment": "by hand"})
            assert made.status_code == 201, made.text
        silences: list[dict[str, Any]] = []
        cursor: dict[str, str] = {}
        while True:
            page = (await client.get("/v1/silences", params={"limit": 3, **cursor})).json()
            silences.append(page)
            if page["next"] is None:
                break
            cursor = {"cursor": page["next"]}
        crossed = await client.get("/v1/incidents", params={"cursor": silences[0]["next"]})

    # The default page is 50; every page says the total; the cursor walks the whole list once, in order.
    assert [len(p["items"]) for p in pages] == [50, 50, 20]
    assert {p["total"] for p in pages} == {120}
    walked = [i["id"] for p in pages for i in p["items"]]
    mine = sorted((s for s in stored if s.community_id == COMMUNITY), key=lambda s: (s.updated_at, s.id),
                  reverse=True)
    assert walked == [s.id for s in mine]
    assert everything["total"] == 125 and len(everything["items"]) == 125 and everything["next"] is None
    # offset still works for older clients, and a page found by offset offers a cursor too.
    assert [i["id"] for i in by_offset["items"]] == walked[100:] and by_offset["total"] == 120
    assert too_many.status_code == 422 and "limit" in too_many.text
    assert garbled.status_code == 422 and garbled.json()["errors"][0]["field"] == "cursor"
    assert both.status_code == 422 and both.json()["errors"][0]["field"] == "offset"
    assert [len(p["items"]) for p in silences] == [3, 3, 1] and {p["total"] for p in silences} == {7}
    assert len({s["id"] for p in silences for s in p["items"]}) == 7
    assert crossed.status_code == 422 and "silences" in crossed.json()["detail"]
