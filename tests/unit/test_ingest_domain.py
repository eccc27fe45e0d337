"""Ingest's pure decisions: screening (the same on every path), and created / edited / removed / duplicate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.ingest.domain import (
    CommentDraft,
    Incoming,
    Kind,
    Limits,
    Outcome,
    Reason,
    Refusal,
    Seen,
    Tally,
    content_hash,
    decide,
    decide_versions,
    final_state,
    group_by_id,
    one_refusal,
    parse_sources,
    prune_cutoff,
    screen,
    to_message,
)
from terrain.contracts import CommentIn, CommentMessage, comment_id_for

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
LIMITS = Limits(max_text_chars=50, sources=parse_sources("facebook, Instagram"))


def c(text: str = "Service déplorable", removed: bool = False, ext: str = "1", **kw: object) -> CommentIn:
    return CommentIn(source="facebook", external_id=ext, community_id="resto", thread_id="p",
                     text=text, created_at=NOW, removed=removed, **kw)


def inc(text: str = "Service déplorable", kind: Kind = Kind.upsert, ext: str = "1") -> Incoming:
    return Incoming(c(text, removed=kind is Kind.removal, ext=ext), kind)


H = content_hash(c())


@pytest.mark.parametrize(
    ("incoming", "seen", "outcome", "revision"),
    [
        (inc(), None, Outcome.created, 1),  # first sighting
        (inc(), Seen(H, 1, False), Outcome.duplicate, 1),  # a repost of the same text
        (inc("Service déplorable (edit)"), Seen(H, 1, False), Outcome.edited, 2),  # text changed: an edit
        (inc(kind=Kind.removal), Seen(H, 2, False), Outcome.removed, 3),  # the source removed it
        (inc(kind=Kind.removal), Seen(H, 3, True), Outcome.duplicate, 3),  # removal reported twice
        (inc(), Seen(H, 3, True), Outcome.edited, 4),  # reappears after removal (unhide): publish it again
        (inc(kind=Kind.removal), None, Outcome.removed, 1),  # removal of a comment never seen is passed on
        (inc(kind=Kind.first), None, Outcome.created, 1),  # Meta `add`, first sighting
        (inc("old text", kind=Kind.first), Seen(H, 2, False), Outcome.duplicate, 2),  # late `add` after an edit
        (inc(kind=Kind.first), Seen(H, 2, True), Outcome.duplicate, 2),  # late `add` after a removal
    ],
)
def test_decide(incoming: Incoming, seen: Seen | None, outcome: Outcome, revision: int):
    d = decide("id", incoming, seen)
    assert (d.outcome, d.revision) == (outcome, revision)


def test_versions_in_one_batch_are_decided_in_turn():
    batch = [inc("v1", kind=Kind.first), inc("other", ext="2"), inc("v2"), inc("v1", kind=Kind.first),
             inc("", kind=Kind.removal), inc("", kind=Kind.removal)]
    groups = group_by_id(batch)
    assert list(groups) == [comment_id_for("facebook", "1"), comment_id_for("facebook", "2")]
    ds = decide_versions("id", groups[comment_id_for("facebook", "1")], None)
    # created, edited, the late add a duplicate, removed, the second removal a duplicate: nothing lost
    assert [(d.outcome, d.revision) for d in ds] == [
        (Outcome.created, 1), (Outcome.edited, 2), (Outcome.duplicate, 2), (Outcome.removed, 3),
        (Outcome.duplicate, 3)]
    final = final_state(ds)
    assert final is not None and (final.outcome, final.revision) == (Outcome.removed, 3)
    assert final_state([decide("id", inc(), Seen(H, 1, False))]) is None  # only a repost: nothing to store


def test_message_id_is_stable_per_version_and_distinct_after_pruning():
    d = decide(comment_id_for("facebook", "1"), inc(), None)
    a, b = to_message(inc(), d, NOW), to_message(inc(), d, NOW)
    assert a.message_id == b.message_id  # a retry republishes the same id: consumers drop it
    edited = decide(d.comment_id, inc("new"), Seen(d.content_hash, 1, False))
    assert to_message(inc("new"), edited, NOW).message_id != a.message_id
    # Dedup record pruned, a different text comes as revision 1 again: it must not reuse the old id.
    again = decide(d.comment_id, inc("other text"), None)
    assert again.revision == 1 and to_message(inc("other text"), again, NOW).message_id != a.message_id


def draft(**kw: object) -> CommentDraft:
    base: dict[str, object] = {"source": "facebook", "external_id": "1", "community_id": "resto",
                               "thread_id": "p", "text": "Bonjour", "created_at": NOW}
    return CommentDraft.model_validate({**base, **kw})


@pytest.mark.parametrize(
    ("kw", "kind", "reason", "field"),
    [
        ({"text": ""}, Kind.upsert, Reason.empty_text, "text"),  # nothing to read
        ({"text": " \n\t "}, Kind.upsert, Reason.empty_text, "text"),  # whitespace is empty too
        ({"source": "myspace"}, Kind.upsert, Reason.unknown_source, "source"),  # would split comment ids
        ({"source": "myspace", "text": ""}, Kind.upsert, Reason.unknown_source, "source"),  # source first
    ],
)
def test_screen_refuses(kw: dict[str, object], kind: Kind, reason: Reason, field: str):
    r = screen(draft(**kw), LIMITS, kind)
    assert isinstance(r, Refusal) and (r.reason, r.field) == (reason, field)
    assert r.describe().startswith(reason.value)


def test_screen_accepts_removals_without_text_and_normalises():
    removal = screen(draft(text=""), LIMITS, Kind.removal)
    assert isinstance(removal, Incoming) and removal.kind is Kind.removal and removal.comment.removed
    assert to_message(removal, decide("id", removal, None), NOW, "fr").comment.lang is None  # no text
    flagged = screen(draft(text="", removed=True), LIMITS)
    assert isinstance(flagged, Incoming) and flagged.kind is Kind.removal
    ok = screen(draft(source="Instagram"), LIMITS)
    assert isinstance(ok, Incoming) and ok.comment.source == "instagram"
    # The language is detected only when a message is built: reposts cost no detection.
    assert ok.comment.lang is None and to_message(ok, decide("id", ok, None), NOW, "fr").comment.lang == "fr"
    given = screen(draft(lang="en"), LIMITS)
    assert isinstance(given, Incoming)
    assert to_message(given, decide("id", given, None), NOW, "fr").comment.lang == "en"  # the source's wins


def test_long_text_is_truncated_and_flagged_never_dropped():
    text = "é" * 49 + "😡" * 10
    r = screen(draft(text=text), LIMITS)
    assert isinstance(r, Incoming) and r.truncated and r.comment.text == text[:50]
    msg = to_message(r, decide("id", r, None), NOW)
    assert msg.comment.text_truncated and len(msg.comment.text) == 50
    CommentMessage.model_validate_json(msg.model_dump_json())  # still valid against the contract
    short = screen(draft(), LIMITS)
    assert isinstance(short, Incoming) and not short.truncated


def test_prune_cutoff():
    assert prune_cutoff(NOW, timedelta(days=30)) == NOW - timedelta(days=30)


def test_language_batch_detection_answers_as_one_by_one():
    from services.ingest.language import detect_language, detect_languages

    texts = ["Service déplorable, 45 minutes d'attente 😡", "Terrible customer service, never again.",
             "", "👍👍", "ab", "@lea.voyage https://t.co/x 12", "Muy buena comida, volveremos",
             "Bonjour, la boutique est-elle ouverte dimanche ?", "x" * 5000]
    assert detect_languages(texts) == [detect_language(t) for t in texts]
    assert detect_languages(texts)[:4] == ["fr", "en", "und", "und"]
    assert detect_languages([]) == []
    # Enough texts for the batch walk, of mixed lengths (the longest finish in Python), mixed languages.
    many = [t * k for k in (1, 2, 3, 7, 30) for t in texts] + ["Génial 🎉 " * 60, "Non.", "ok"]
    assert detect_languages(many) == [detect_language(t) for t in many]


@pytest.mark.parametrize(("kind", "seen"), [(Kind.first, None), (Kind.upsert, None), (Kind.upsert, Seen(H, 1, False)),
                                            (Kind.removal, Seen(H, 2, False)), (Kind.removal, None)])
def test_a_built_message_is_exactly_what_validating_it_gives(kind: Kind, seen: Seen | None) -> None:
    """Messages are built without a second validation: what they serialise to must be what the contract reads
    back, field for field, with every optional field set (the nested metrics model included)."""
    full = CommentDraft(source="Facebook", external_id="ext-9", community_id="resto", thread_id="p", parent_id="8",
                        author_id="u1", author_name="Camille R.", text="Plat froid 😡 " * 10,
                        created_at=datetime(2026, 11, 24, 20, 5, tzinfo=timezone(timedelta(hours=1))),
                        metrics={"likes": 3, "replies": 1}, place="Lyon 2e", removed=kind is Kind.removal)
    screened = screen(full, LIMITS, kind)
    assert isinstance(screened, Incoming)
    decision = decide("cid", screened, seen)
    assert decision.outcome is not Outcome.duplicate
    msg = to_message(screened, decision, NOW, "fr")
    body = msg.model_dump_json()
    again = CommentMessage.model_validate_json(body)
    assert again == msg and again.model_dump_json() == body
    assert again.comment.metrics.likes == 3 and again.comment.source == "facebook"
    assert again.comment.text_truncated and again.comment.lang == (None if kind is Kind.removal else "fr")


# --- dates in the future ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("created_at", "refused"),
    [
        ("2199-01-01T00:00:00Z", True),  # the comment that opened an incident downstream
        ("2030-06-01T00:00:00Z", True),  # a year typed wrong
        ("2026-12-01T00:00:00Z", True),  # six days ahead of NOW, though before the wall clock of some runs
        ("2026-11-26T11:59:59Z", False),  # a day ahead, less a second: clocks drift
        ("2026-11-26T12:00:00Z", False),  # exactly the skew: still accepted
        ("2026-11-26T12:00:00.000001Z", True),  # a microsecond past it
        ("2026-11-26T13:00:00+01:00", False),  # the offset is applied before comparing
        ("2020-01-01T00:00:00Z", False),  # the past is fine
    ],
)
def test_a_comment_dated_beyond_the_skew_is_refused(created_at: str, refused: bool):
    r = screen(draft(created_at=created_at), LIMITS, now=NOW)
    if refused:
        assert isinstance(r, Refusal) and (r.reason, r.field) == (Reason.future_timestamp, "created_at")
        assert r.describe().startswith("future_timestamp: created_at: dated ")
    else:
        assert isinstance(r, Incoming)


def test_the_future_is_measured_from_the_callers_clock_and_the_configured_skew():
    ahead = draft(created_at=NOW + timedelta(minutes=5))
    assert isinstance(screen(ahead, LIMITS, now=NOW), Incoming)
    strict = Limits(sources=LIMITS.sources, max_future_skew=timedelta(0))
    assert isinstance(screen(ahead, strict, now=NOW), Refusal)
    assert isinstance(screen(ahead, strict, now=NOW + timedelta(minutes=5)), Incoming)  # the clock moved on
    # A removal dated ahead is refused too: the date is the source's bug whatever the change.
    assert isinstance(screen(draft(text="", created_at="2199-01-01T00:00:00Z"), LIMITS, Kind.removal, now=NOW),
                      Refusal)


# --- ordered versions, and what survives the dedup window --------------------------------------------------

T1, T2, T3 = (datetime(2026, 11, 20, h, tzinfo=UTC) for h in (9, 10, 11))


def at(text: str = "Service déplorable", when: datetime | None = T2, kind: Kind = Kind.upsert) -> Incoming:
    return Incoming(c(text, removed=kind is Kind.removal), kind, version_at=when)


@pytest.mark.parametrize(
    ("incoming", "seen", "outcome", "revision", "version_at"),
    [
        # A replayed edit older than the one applied: stale, nothing changes (the text must not roll back).
        (at("v2", T2), Seen(content_hash(c("v3")), 3, False, T3), Outcome.stale, 3, T3),
        # A newer edit is an edit, and the record moves to its time.
        (at("v3", T3), Seen(content_hash(c("v2")), 2, False, T2), Outcome.edited, 3, T3),
        # The same version again (Meta's retry): a duplicate.
        (at("v2", T2), Seen(content_hash(c("v2")), 2, False, T2), Outcome.duplicate, 2, T2),
        # Same time, other text: two edits within Meta's one-second resolution; the later arrival wins.
        (at("v2b", T2), Seen(content_hash(c("v2")), 2, False, T2), Outcome.edited, 3, T2),
        # An edit older than the removal: stale, the comment stays removed.
        (at("v1", T1), Seen(H, 3, True, T2), Outcome.stale, 3, T2),
        # A removal is applied whatever its date: losing one would keep a taken-down comment on show.
        (at("", T1, Kind.removal), Seen(H, 2, False, T2), Outcome.removed, 3, T2),
        # Sources that date only the comment (HTTP, the inbound topic, imports) order nothing: as before.
        (at("new text", None), Seen(H, 1, False, T3), Outcome.edited, 2, T3),
        (at("new text", T1), Seen(H, 1, False, None), Outcome.edited, 2, T1),
        # The content hash pruned after the dedup window, the comment still known:
        (at(when=T1, kind=Kind.first), Seen(None, 2, False, T2), Outcome.duplicate, 2, T2),  # a replayed `add`
        (at("v2", T2), Seen(None, 2, False, T2), Outcome.duplicate, 2, T2),  # the last edit, replayed
        (at("v1", T1), Seen(None, 2, False, T2), Outcome.stale, 2, T2),  # an older edit, replayed
        (at("v3", T3), Seen(None, 2, False, T2), Outcome.edited, 3, T3),  # a newer edit is still an edit
        (at("", T3, Kind.removal), Seen(None, 2, False, T2), Outcome.removed, 3, T3),  # a removal still removes
        (at("same text", None), Seen(None, 2, False, None), Outcome.edited, 3, None),  # no way to compare
    ],
)
def test_versions_are_ordered_by_their_time(incoming: Incoming, seen: Seen, outcome: Outcome, revision: int,
                                            version_at: datetime | None):
    d = decide("id", incoming, seen)
    assert (d.outcome, d.revision, d.version_at) == (outcome, revision, version_at)
    assert d.content_hash  # a message id can always be derived, pruned or not


def test_a_stale_edit_in_a_batch_changes_nothing_and_is_counted():
    versions = [at("v1", T1, Kind.first), at("v3", T3), at("v2", T2), at("v3", T3)]
    ds = decide_versions("id", versions, None)
    assert [(d.outcome, d.revision) for d in ds] == [
        (Outcome.created, 1), (Outcome.edited, 2), (Outcome.stale, 2), (Outcome.duplicate, 2)]
    final = final_state(ds)
    assert final is not None and (final.outcome, final.revision, final.version_at) == (Outcome.edited, 2, T3)
    assert final.content_hash == content_hash(c("v3"))
    assert final_state([decide("id", at("v2", T2), Seen(H, 3, False, T3))]) is None  # stale only: nothing stored
    tally = Tally()
    tally.add_decisions(ds)
    assert (tally.created, tally.edited, tally.stale, tally.duplicates, tally.accepted) == (1, 1, 1, 1, 2)


def test_every_bad_field_of_a_record_is_named_in_one_refusal():
    refusals = [Refusal(Reason.invalid, "thread_id", "Field required"),
                Refusal(Reason.invalid, "text", "Field required"),
                Refusal(Reason.invalid, "created_at", "Input should be a valid datetime")]
    one = one_refusal(refusals)
    assert one.reason is Reason.invalid and one.field == "thread_id, text, created_at"
    assert one.message == "thread_id, text: Field required; created_at: Input should be a valid datetime"
    assert one_refusal(refusals[:1]) is refusals[0]
