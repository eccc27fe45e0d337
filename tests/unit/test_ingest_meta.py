"""Meta webhooks without a server: signature, handshake and how each documented change is read."""

from __future__ import annotations

from datetime import UTC, datetime

from services.ingest.domain import Kind, Limits, Reason, Refusal
from services.ingest.meta import (
    SignatureCheck,
    count_changes,
    handshake,
    is_delivery,
    parse_delivery,
    sign,
    verify_signature,
)
from tests.ingest_payloads import IG_ACCOUNT, PAGE, SENT_AT, delivery, feed_comment, feed_item, ig_comment, post_id

SECRET = "app-secret"
LIMITS = Limits()


def test_signature_checked_on_raw_bytes_in_constant_time():
    body = b'{"object":"page","entry":[]}'
    good = sign(body, SECRET)
    assert verify_signature(body, good, SECRET) is SignatureCheck.ok
    assert verify_signature(body, good.upper().replace("SHA256=", "sha256="), SECRET) is SignatureCheck.ok
    assert verify_signature(body + b" ", good, SECRET) is SignatureCheck.mismatch  # one byte more
    assert verify_signature(body, sign(body, "other"), SECRET) is SignatureCheck.mismatch
    assert verify_signature(body, None, SECRET) is SignatureCheck.missing
    assert verify_signature(body, "", SECRET) is SignatureCheck.missing
    assert verify_signature(body, "sha1=abc", SECRET) is SignatureCheck.malformed
    assert verify_signature(body, "sha256=" + "0" * 63, SECRET) is SignatureCheck.malformed


def test_handshake():
    ok = {"hub.mode": "subscribe", "hub.verify_token": "tok", "hub.challenge": "1158201444"}
    assert handshake(ok, "tok") == "1158201444"
    assert handshake({**ok, "hub.verify_token": "nope"}, "tok") is None
    assert handshake({**ok, "hub.mode": "unsubscribe"}, "tok") is None
    assert handshake(ok, None) is None  # no token configured: never verified
    assert handshake({"hub.mode": "subscribe", "hub.verify_token": "tok"}, "tok") is None


def test_page_feed_comments_edits_removals_replies_and_signals():
    payload = delivery(
        "page",
        (PAGE, [
            feed_comment("901", "1", "Plat froid, serveur désagréable 😡"),
            feed_comment("901", "2", "Pareil pour nous…", parent="901_1"),  # a reply
            feed_comment("901", "1", "Plat froid. Edit : remboursés, merci", verb="edited"),
            feed_comment("901", "3", None, verb="remove"),  # removals carry no message
            feed_comment("901", "4", None, verb="hide"),
            feed_item("reaction", "901"),
            feed_item("like", "901"),
            feed_item("share", "901"),
            feed_item("status", "902", message="Nouveau menu !"),
            feed_comment("901", "5", "", verb="add"),  # a sticker-only comment: empty text
            feed_comment("901", "6", "bloqué", verb="block"),
            {"field": "feed", "value": "not an object"},
        ]),
    )
    assert count_changes(payload) == 12 and is_delivery(payload)
    parsed = parse_delivery(payload, LIMITS)
    assert not isinstance(parsed, Refusal)
    by_id = [(i.comment.external_id, i.kind) for i in parsed.items]
    assert by_id == [("901_1", Kind.first), ("901_2", Kind.first), ("901_1", Kind.upsert),
                     ("901_3", Kind.removal), ("901_4", Kind.removal)]
    first, reply = parsed.items[0].comment, parsed.items[1].comment
    assert (first.community_id, first.thread_id, first.parent_id) == (PAGE, post_id("901"), None)
    assert reply.parent_id == "901_1"
    assert (first.author_id, first.author_name, first.source) == ("6203311", "Camille R.", "facebook")
    assert first.created_at == datetime.fromtimestamp(SENT_AT - 60, UTC)
    assert parsed.items[3].comment.removed and parsed.items[3].comment.text == ""
    assert dict(parsed.signals) == {"reaction": 1, "like": 1, "share": 1, "post": 1, "other": 2}
    assert [r.refusal.reason for r in parsed.refused] == [Reason.empty_text]
    assert parsed.refused[0].refusal.field == "entry[0].changes[9].value.text"
    # The dead-lettered change is a delivery of its own, replayable by `terrain import`.
    assert parsed.refused[0].delivery["entry"][0]["changes"][0]["value"]["comment_id"] == "901_5"


def test_created_time_as_iso_string_and_missing_post_id():
    change = feed_comment("903", "7", "Super accueil", created_time="2025-11-21T18:30:00+0000")
    del change["value"]["post_id"]
    parsed = parse_delivery(delivery("page", (PAGE, [change])), LIMITS)
    assert not isinstance(parsed, Refusal)
    c = parsed.items[0].comment
    assert c.created_at == datetime(2025, 11, 21, 18, 30, tzinfo=UTC)
    assert c.thread_id == post_id("903")  # derived from the comment id


def test_created_time_that_is_no_time_falls_back_to_the_delivery_time():
    # An integer too large for a float, digits past int()'s limit, more digits than any time in milliseconds:
    # each once ended the delivery in a 500.
    for bad in (10**400, "9" * 5000, "1" * 16, float("nan"), "2025-13-01T00:00:00"):
        change = feed_comment("904", "8", "Bonjour", created_time=bad)  # type: ignore[arg-type]
        parsed = parse_delivery(delivery("page", (PAGE, [change])), LIMITS)
        assert not isinstance(parsed, Refusal), bad
        assert parsed.items[0].comment.created_at == datetime.fromtimestamp(SENT_AT, UTC), bad


def test_instagram_comments_and_replies_with_unicode():
    payload = delivery("instagram", (IG_ACCOUNT, [
        ig_comment("17865799348089039", "17918195224117851", "Trop bien 🎉🎉 l'apéro des blogueurs !"),
        ig_comment("17865799348089040", "17918195224117851", "👍", parent="17865799348089039"),
        {"field": "mentions", "value": {"media_id": "1", "comment_id": "2"}},
    ]))
    parsed = parse_delivery(payload, LIMITS)
    assert not isinstance(parsed, Refusal)
    a, b = (i.comment for i in parsed.items)
    assert (a.source, a.community_id, a.thread_id, a.author_name) == (
        "instagram", IG_ACCOUNT, "17918195224117851", "lea.voyage")
    assert a.created_at == datetime.fromtimestamp(SENT_AT, UTC)  # Instagram gives no creation time
    assert b.parent_id == "17865799348089039" and b.text == "👍"
    assert dict(parsed.signals) == {"mention": 1}


def test_unreadable_changes_are_refused_one_by_one_never_the_delivery():
    no_id = feed_comment("904", "8", "ok")
    del no_id["value"]["comment_id"]
    no_media = ig_comment("1", "2", "texte")
    del no_media["value"]["media"]
    page = parse_delivery(delivery("page", (PAGE, [no_id, feed_comment("904", "9", "bien")])), LIMITS)
    ig = parse_delivery(delivery("instagram", (IG_ACCOUNT, [no_media])), LIMITS)
    assert not isinstance(page, Refusal) and not isinstance(ig, Refusal)
    assert len(page.items) == 1 and page.refused[0].refusal.field == "entry[0].changes[0].value.comment_id"
    assert ig.refused[0].refusal.field == "entry[0].changes[0].value.thread_id"
    assert isinstance(parse_delivery([1, 2], LIMITS), Refusal)
    other = parse_delivery({"object": "user", "entry": [{"id": "1", "changes": [{"field": "photos", "value": {}}]}]},
                           LIMITS)
    assert not isinstance(other, Refusal) and dict(other.signals) == {"other": 1}


def test_a_change_dated_in_the_future_is_refused_on_its_own_naming_metas_field():
    now = datetime.fromtimestamp(SENT_AT, UTC)
    far = int(datetime(2199, 1, 1, tzinfo=UTC).timestamp())
    payload = delivery("page", (PAGE, [
        feed_comment("905", "1", "Bonjour", created_time=far),
        feed_comment("905", "2", "Rien à signaler", verb="edited", created_time="2030-01-01T00:00:00+0000"),
        feed_comment("905", "3", "À l'heure", created_time=SENT_AT + 3600),  # an hour ahead: clocks drift
    ]))
    parsed = parse_delivery(payload, LIMITS, now)
    assert not isinstance(parsed, Refusal)
    assert [i.comment.external_id for i in parsed.items] == ["905_3"]
    assert [(r.refusal.reason, r.refusal.field) for r in parsed.refused] == [
        (Reason.future_timestamp, "entry[0].changes[0].value.created_time"),
        (Reason.future_timestamp, "entry[0].changes[1].value.created_time")]
    assert parsed.refused[0].delivery["entry"][0]["changes"][0]["value"]["comment_id"] == "905_1"
    # Instagram dates a comment by the entry's time: that is the field named.
    ig = parse_delivery(delivery("instagram", (IG_ACCOUNT, [ig_comment("1", "2", "texte")]), time=far), LIMITS, now)
    assert not isinstance(ig, Refusal) and not ig.items
    assert [(r.refusal.reason, r.refusal.field) for r in ig.refused] == [(Reason.future_timestamp, "entry[0].time")]


def test_each_change_carries_its_time_to_order_a_comments_versions():
    parsed = parse_delivery(delivery("page", (PAGE, [
        feed_comment("906", "1", "v1", created_time=SENT_AT - 120),
        feed_comment("906", "1", "v2", verb="edited", created_time=SENT_AT - 60),
        feed_comment("906", "2", None, verb="remove", created_time="no time"),  # falls back to the entry's time
    ])), LIMITS)
    assert not isinstance(parsed, Refusal)
    assert [i.version_at for i in parsed.items] == [datetime.fromtimestamp(t, UTC)
                                                    for t in (SENT_AT - 120, SENT_AT - 60, SENT_AT)]
