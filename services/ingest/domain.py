"""Pure ingest logic: stable ids, content fingerprints and the created / edited / removed / duplicate decision."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from terrain.contracts import Comment, CommentAction, CommentIn, CommentMessage, comment_id_for
from terrain.contracts.base import derived_id

PRODUCER = "terrain-ingest"


class Outcome(StrEnum):
    created = "created"
    edited = "edited"
    removed = "removed"
    duplicate = "duplicate"


@dataclass(frozen=True)
class Seen:
    """What ingest remembers of a comment it already published."""

    content_hash: str
    revision: int
    removed: bool


@dataclass(frozen=True)
class Decision:
    comment_id: str
    outcome: Outcome
    revision: int
    content_hash: str


def content_hash(comment: CommentIn) -> str:
    """Fingerprint of what a reader sees; a different fingerprint for the same id is an edit."""
    return hashlib.sha256(comment.text.encode("utf-8")).hexdigest()


def latest_per_id(comments: list[CommentIn]) -> dict[str, CommentIn]:
    """Collapse a batch to the last version of each comment, keeping first-seen order."""
    out: dict[str, CommentIn] = {}
    for c in comments:
        out[comment_id_for(c.source, c.external_id)] = c
    return out


def decide(comment_id: str, incoming: CommentIn, seen: Seen | None) -> Decision:
    """Whether an incoming comment is new, an edit, a removal, or a repost of what was already published."""
    digest = content_hash(incoming)
    if seen is None:
        # A removal of a comment never seen still counts: downstream may hold it from another path.
        outcome = Outcome.removed if incoming.removed else Outcome.created
        return Decision(comment_id, outcome, 1, digest)
    if incoming.removed:
        if seen.removed:
            return Decision(comment_id, Outcome.duplicate, seen.revision, seen.content_hash)
        return Decision(comment_id, Outcome.removed, seen.revision + 1, seen.content_hash)
    if digest == seen.content_hash and not seen.removed:
        return Decision(comment_id, Outcome.duplicate, seen.revision, digest)
    return Decision(comment_id, Outcome.edited, seen.revision + 1, digest)


def to_message(incoming: CommentIn, decision: Decision, now: datetime) -> CommentMessage:
    """The normalised comment for `terrain.comments.v1`; its message id is stable per comment revision."""
    action = {
        Outcome.created: CommentAction.created,
        Outcome.edited: CommentAction.edited,
        Outcome.removed: CommentAction.removed,
    }[decision.outcome]
    comment = Comment(
        **incoming.model_dump(),
        comment_id=decision.comment_id,
        revision=decision.revision,
        action=action,
    )
    return CommentMessage(
        message_id=derived_id("terrain.comments.v1", decision.comment_id, str(decision.revision)),
        occurred_at=incoming.created_at if action is CommentAction.created else now,
        producer=PRODUCER,
        comment=comment,
    )
