"""Ingest's decision table: created, edited, removed or duplicate."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.ingest.domain import Outcome, Seen, content_hash, decide, latest_per_id, to_message
from terrain.contracts import CommentIn, comment_id_for

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def c(text: str = "Service déplorable", removed: bool = False, ext: str = "1") -> CommentIn:
    return CommentIn(source="facebook", external_id=ext, community_id="resto", thread_id="p",
                     text=text, created_at=NOW, removed=removed)


H = content_hash(c())


@pytest.mark.parametrize(
    ("incoming", "seen", "outcome", "revision"),
    [
        (c(), None, Outcome.created, 1),  # first sighting
        (c(), Seen(H, 1, False), Outcome.duplicate, 1),  # a repost of the same text
        (c("Service déplorable (edit)"), Seen(H, 1, False), Outcome.edited, 2),  # text changed: an edit
        (c(removed=True), Seen(H, 2, False), Outcome.removed, 3),  # the source removed it
        (c(removed=True), Seen(H, 3, True), Outcome.duplicate, 3),  # removal reported twice
        (c(), Seen(H, 3, True), Outcome.edited, 4),  # reappears after removal: publish it again
        (c(removed=True), None, Outcome.removed, 1),  # removal of a comment never seen is still passed on
    ],
)
def test_decide(incoming: CommentIn, seen: Seen | None, outcome: Outcome, revision: int):
    d = decide("id", incoming, seen)
    assert (d.outcome, d.revision) == (outcome, revision)


def test_latest_per_id_keeps_last_version():
    batch = [c("v1"), c("other", ext="2"), c("v2")]
    latest = latest_per_id(batch)
    assert [x.text for x in latest.values()] == ["v2", "other"]


def test_message_id_is_stable_per_revision():
    d = decide(comment_id_for("facebook", "1"), c(), None)
    a, b = to_message(c(), d, NOW), to_message(c(), d, NOW)
    assert a.message_id == b.message_id
    edited = decide(d.comment_id, c("new"), Seen(d.content_hash, 1, False))
    assert to_message(c("new"), edited, NOW).message_id != a.message_id
