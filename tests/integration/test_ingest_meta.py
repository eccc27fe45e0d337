"""Meta webhooks against a running ingest service on the real broker and PostgreSQL: signed replays of
documented-format deliveries (edits, removals, replies, mixed items, unicode), retries and bad signatures."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from services.ingest.app import IngestSettings, build_app
from terrain.contracts import CommentMessage, comment_id_for
from tests.conftest import running
from tests.ingest_payloads import (
    IG_ACCOUNT,
    PAGE,
    SENT_AT,
    delivery,
    feed_comment,
    feed_item,
    ig_comment,
    post_id,
    signed,
)
from tests.kafka_helpers import consume, headers_of

pytestmark = pytest.mark.integration

SECRET = "meta-app-secret-for-tests"
TOKEN = "verify-me"


def settings(settings_kwargs: dict[str, Any], **kw: Any) -> IngestSettings:
    return IngestSettings(**settings_kwargs, meta_app_secret=SECRET, meta_verify_token=TOKEN, **kw)


async def test_handshake(settings_kwargs, topic_overrides):
    app = build_app(settings(settings_kwargs), topic_overrides=topic_overrides)
    async with running(app) as client:
        ok = await client.get("/webhooks/meta", params={
            "hub.mode": "subscribe", "hub.verify_token": TOKEN, "hub.challenge": "1158201444"})
        wrong = await client.get("/webhooks/meta", params={
            "hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1158201444"})
    assert ok.status_code == 200 and ok.text == "1158201444" and ok.headers["content-type"].startswith("text/plain")
    assert wrong.status_code == 403


async def test_replayed_deliveries_land_once_each(settings_kwargs, topic_overrides, kafka_bootstrap, caplog):
    caplog.set_level(logging.DEBUG)
    app = build_app(settings(settings_kwargs), topic_overrides=topic_overrides)
    first = delivery(
        "page",
        (PAGE, [
            feed_comment("901", "1", "Plat froid, serveur désagréable 😡 — jamais plus",
                         author=("6203311", "Zoé Ünal")),
            feed_item("reaction", "901"),
            feed_comment("901", "2", "Pareil pour nous… 1h15 d'attente", parent="901_1"),
            feed_item("like", "901"),
            feed_comment("901", "3", "Merci pour l'accueil chaleureux 🎉🇫🇷"),
            feed_comment("901", "4", ""),  # sticker only: refused, dead-lettered with the reason
        ]),
        ("209384756102938", [feed_comment("555", "1", "Great gig last night!")]),  # a second Page
    )
    instagram = delivery("instagram", (IG_ACCOUNT, [
        ig_comment("17865799348089039", "17918195224117851", "L'apéro des blogueurs, trop bien ✈️"),
        ig_comment("17865799348089040", "17918195224117851", "@lea.voyage on y sera !", parent="17865799348089039"),
    ]))
    changes = delivery("page", (PAGE, [
        feed_comment("901", "1", "Plat froid. Edit : le gérant nous a rappelés, remboursés.", verb="edited"),
        feed_comment("901", "3", None, verb="remove"),
        feed_comment("901", "2", None, verb="hide"),
        feed_comment("901", "1", "Plat froid, serveur désagréable 😡 — jamais plus"),  # a late add: no edit back
    ]))
    async with running(app) as client:
        async def post(payload: dict[str, Any]) -> Any:
            body, headers = signed(payload, SECRET)
            return await client.post("/webhooks/meta", content=body, headers=headers)

        r1 = await post(first)
        retry = await post(first)  # Meta retries the same delivery
        r_ig = await post(instagram)
        r2 = await post(changes)
        # The same comment from another path (an export sent over HTTP): the same stable id, a duplicate.
        other_path = await client.post("/v1/comments", json={
            "source": "facebook", "external_id": "555_1", "community_id": "209384756102938",
            "thread_id": "209384756102938_555", "text": "Great gig last night!", "created_at": "2025-11-22T09:59:00Z"})
        body, headers = signed(delivery("page", (PAGE, [feed_comment("901", "9", "forged")])), SECRET)
        forged = await client.post("/webhooks/meta", content=body.replace(b"forged", b"FORGED"), headers=headers)
        unsigned = await client.post("/webhooks/meta", content=body, headers={"Content-Type": "application/json"})
        out = await consume(kafka_bootstrap, topic_overrides["terrain.comments.v1"], expect=9, settle_s=1.5)
        dlq = await consume(kafka_bootstrap, topic_overrides["terrain.comments.inbound.v1.dlq"], expect=2, settle_s=0.5)
        metrics = (await client.get("/metrics")).text

    assert r1.status_code == 200
    assert r1.json() == {"changes": 7, "comments": 4, "accepted": 4, "duplicates": 0, "stale": 0, "rejected": 1,
                         "signals": 2}
    assert retry.status_code == 200 and retry.json()["accepted"] == 0 and retry.json()["duplicates"] == 4
    assert r_ig.json()["accepted"] == 2
    assert r2.json()["accepted"] == 3 and r2.json()["duplicates"] == 1
    assert forged.status_code == 403 and unsigned.status_code == 401
    assert other_path.status_code == 202 and other_path.json()["duplicates"] == 1

    messages = [CommentMessage.model_validate_json(r.value) for r in out]
    got = sorted((m.comment.external_id, m.comment.action.value, m.comment.revision) for m in messages)
    assert got == sorted([
        ("901_1", "created", 1), ("901_2", "created", 1), ("901_3", "created", 1), ("555_1", "created", 1),
        ("17865799348089039", "created", 1), ("17865799348089040", "created", 1),
        ("901_1", "edited", 2), ("901_3", "removed", 2), ("901_2", "removed", 2),
    ])  # nine versions, each once: the retry and the late `add` published nothing
    by_key = {(m.comment.external_id, m.comment.revision): (m, r.key) for m, r in zip(messages, out, strict=True)}
    created, key = by_key[("901_1", 1)]
    assert key == PAGE.encode() and created.comment.community_id == PAGE
    assert created.comment.thread_id == post_id("901") and created.comment.parent_id is None
    assert created.comment.text == "Plat froid, serveur désagréable 😡 — jamais plus"
    assert (created.comment.author_id, created.comment.author_name) == ("6203311", "Zoé Ünal")  # kept for replies
    assert created.comment.comment_id == comment_id_for("facebook", "901_1")
    assert by_key[("901_2", 1)][0].comment.parent_id == "901_1"
    assert by_key[("901_1", 2)][0].comment.text.startswith("Plat froid. Edit")
    assert by_key[("901_3", 2)][0].comment.removed
    assert by_key[("555_1", 1)][1] == b"209384756102938"
    ig = by_key[("17865799348089040", 1)][0].comment
    assert (ig.source, ig.community_id, ig.thread_id, ig.parent_id) == (
        "instagram", IG_ACCOUNT, "17918195224117851", "17865799348089039")
    assert {m.comment.lang for m in messages if not m.comment.removed} <= {"fr", "en", "und"}
    assert by_key[("901_1", 1)][0].comment.lang == "fr" and by_key[("555_1", 1)][0].comment.lang == "en"

    assert len(dlq) == 2  # the sticker-only comment, refused again on Meta's retry
    h = headers_of(dlq[0])
    assert h["terrain-dlq-reason"].startswith("empty_text: entry[0].changes[5].value.text")
    assert h["terrain-dlq-origin-topic"] == "meta-webhook" and dlq[0].key == PAGE.encode()
    assert json.loads(dlq[0].value)["entry"][0]["changes"][0]["value"]["comment_id"] == "901_4"

    assert 'terrain_ingest_rejected_total{channel="webhook",reason="bad_signature"} 2.0' in metrics
    assert 'terrain_ingest_meta_signals_total{kind="reaction"}' in metrics
    assert 'terrain_ingest_duplicates_total{channel="webhook"}' in metrics
    assert 'terrain_ingest_rejected_total{channel="webhook",reason="empty_text"}' in metrics
    assert "terrain_ingest_publish_latency_seconds_count{channel=\"webhook\"}" in metrics

    # Author identity (and text) never above debug level.
    loud = [r.getMessage() + json.dumps(r.__dict__, default=str) for r in caplog.records if r.levelno >= logging.INFO]
    assert loud and not any(s in line for line in loud for s in ("Zoé", "Ünal", "6203311", "lea.voyage", "Plat froid"))


async def test_limits_and_clear_errors(settings_kwargs, topic_overrides):
    app = build_app(settings(settings_kwargs, ingest_max_body_bytes=20_000, ingest_max_changes_per_delivery=5),
                    topic_overrides=topic_overrides)
    unconfigured = build_app(IngestSettings(**settings_kwargs), topic_overrides=topic_overrides)
    async with running(app) as client:
        big, big_headers = signed(delivery("page", (PAGE, [feed_comment("1", "1", "x" * 30_000)])), SECRET)
        too_big = await client.post("/webhooks/meta", content=big, headers=big_headers)
        many, many_headers = signed(delivery("page", (PAGE, [feed_comment("1", str(i), "ok") for i in range(6)])),
                                    SECRET)
        too_many = await client.post("/webhooks/meta", content=many, headers=many_headers)
        bad, bad_headers = signed(b'{"object": "page",\n "entry": [}', SECRET)
        bad_json = await client.post("/webhooks/meta", content=bad, headers=bad_headers)
    # No secret configured: refused before anything else runs (no broker or database needed).
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=unconfigured), base_url="http://test") as client:
        body, headers = signed(delivery("page", (PAGE, [])), SECRET)
        off = await client.post("/webhooks/meta", content=body, headers=headers)
    assert too_big.status_code == 413
    assert too_many.status_code == 413 and "6 > 5" in too_many.json()["detail"]
    assert bad_json.status_code == 400 and (bad_json.json()["line"], bad_json.json()["column"]) == (2, 12)
    assert off.status_code == 503 and "TERRAIN_META_APP_SECRET" in off.json()["detail"]


ADD = delivery("page", (PAGE, [feed_comment("950", "1", "Plat froid", created_time=SENT_AT - 300)]))
NEWER = delivery("page", (PAGE, [feed_comment("950", "1", "Plat froid. Edit : remboursés, merci !", verb="edited",
                                              created_time=SENT_AT - 60)]))
OLDER = delivery("page", (PAGE, [feed_comment("950", "1", "Plat froid, et le serveur désagréable", verb="edited",
                                              created_time=SENT_AT - 120)]))


def meta_client(client: httpx.AsyncClient) -> Any:
    async def post(payload: dict[str, Any]) -> dict[str, Any]:
        body, headers = signed(payload, SECRET)
        r = await client.post("/webhooks/meta", content=body, headers=headers)
        assert r.status_code == 200, r.text
        return dict(r.json())

    return post


async def stored(app: Any, external_id: str) -> Any:
    async with app.state.runtime.pool.acquire() as conn:
        return await conn.fetchrow("SELECT content_hash, revision, version_at FROM ingest_comments "
                                   "WHERE comment_id = $1", comment_id_for("facebook", external_id))


async def test_an_edit_older_than_the_last_one_applied_is_stale_and_changes_nothing(
        settings_kwargs, topic_overrides, kafka_bootstrap):
    import hashlib
    from datetime import UTC, datetime

    app = build_app(settings(settings_kwargs), topic_overrides=topic_overrides)
    async with running(app) as client:
        post = meta_client(client)
        created, edited = await post(ADD), await post(NEWER)
        stale = await post(OLDER)  # delivered late: Meta's older edit after the newer one
        record = await stored(app, "950_1")
        out = await consume(kafka_bootstrap, topic_overrides["terrain.comments.v1"], expect=2, settle_s=2.0)
        metrics = (await client.get("/metrics")).text

    assert (created["accepted"], edited["accepted"]) == (1, 1)
    assert stale["accepted"] == 0  # before, the older text was published as revision 3
    assert (stale["stale"], stale["duplicates"]) == (1, 0)
    # Two versions published, once each; the text downstream is the newer edit's.
    messages = [CommentMessage.model_validate_json(r.value) for r in out]
    assert [(m.comment.action.value, m.comment.revision, m.comment.text) for m in messages] == [
        ("created", 1, "Plat froid"), ("edited", 2, "Plat froid. Edit : remboursés, merci !")]
    # What ingest stored is still the newer edit's: its text's fingerprint, its revision, its time.
    newest = hashlib.sha256("Plat froid. Edit : remboursés, merci !".encode()).hexdigest()
    assert (record["content_hash"], record["revision"]) == (newest, 2)
    assert record["version_at"] == datetime.fromtimestamp(SENT_AT - 60, UTC)
    assert 'terrain_ingest_comments_total{channel="webhook",outcome="stale"} 1.0' in metrics


async def test_a_replayed_add_after_the_dedup_prune_is_still_a_duplicate(
        settings_kwargs, topic_overrides, kafka_bootstrap):
    from datetime import UTC, datetime, timedelta

    now = [datetime.fromtimestamp(SENT_AT, UTC) + timedelta(minutes=5)]
    app = build_app(settings(settings_kwargs, ingest_dedup_retention_days=30), topic_overrides=topic_overrides,
                    clock=lambda: now[0])
    async with running(app) as client:
        post = meta_client(client)
        created, edited = await post(ADD), await post(NEWER)
        now[0] += timedelta(days=31)  # past the dedup window
        pruned = await app.state.pruner.prune_once()
        record = await stored(app, "950_1")
        replayed_add, replayed_older, replayed_newer = await post(ADD), await post(OLDER), await post(NEWER)
        out = await consume(kafka_bootstrap, topic_overrides["terrain.comments.v1"], expect=2, settle_s=2.0)

    assert (created["accepted"], edited["accepted"], pruned) == (1, 1, 1)
    assert (replayed_add["accepted"], replayed_add["duplicates"]) == (0, 1)  # before: published again as new
    assert replayed_older["accepted"] == 0 and replayed_older["stale"] == 1
    assert (replayed_newer["accepted"], replayed_newer["duplicates"]) == (0, 1)
    messages = [CommentMessage.model_validate_json(r.value) for r in out]
    assert [(m.comment.action.value, m.comment.revision) for m in messages] == [("created", 1), ("edited", 2)]
    # Pruned: the fingerprint went, the comment (its revision and version time) did not.
    assert record is not None and record["content_hash"] is None and record["revision"] == 2


async def test_a_change_dated_in_the_future_is_dead_lettered_and_never_published(
        settings_kwargs, topic_overrides, kafka_bootstrap):
    from datetime import UTC, datetime

    app = build_app(settings(settings_kwargs), topic_overrides=topic_overrides)
    far = int(datetime(2199, 1, 1, tzinfo=UTC).timestamp())
    payload = delivery("page", (PAGE, [feed_comment("951", "1", "Vu en 2199", created_time=far),
                                       feed_comment("951", "2", "Aujourd'hui")]))
    async with running(app) as client:
        body, headers = signed(payload, SECRET)
        r = await client.post("/webhooks/meta", content=body, headers=headers)
        out = await consume(kafka_bootstrap, topic_overrides["terrain.comments.v1"], expect=1, settle_s=1.5)
        dlq = await consume(kafka_bootstrap, topic_overrides["terrain.comments.inbound.v1.dlq"], expect=1)
        metrics = (await client.get("/metrics")).text
    assert r.status_code == 200 and (r.json()["accepted"], r.json()["rejected"]) == (1, 1)
    assert [CommentMessage.model_validate_json(m.value).comment.external_id for m in out] == ["951_2"]
    [letter] = dlq
    reason = headers_of(letter)["terrain-dlq-reason"]
    assert reason.startswith("future_timestamp: entry[0].changes[0].value.created_time: dated 2199-01-01")
    assert json.loads(letter.value)["entry"][0]["changes"][0]["value"]["comment_id"] == "951_1"
    assert 'terrain_ingest_rejected_total{channel="webhook",reason="future_timestamp"}' in metrics
