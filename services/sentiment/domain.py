"""Pure sentiment logic: score and flag comments, and build the scored message with its deterministic id.

Removals: a comment whose action is `removed` is forwarded without scoring: a neutral sentiment with
score 0, confidence 0, no drivers, model_version "unscored", and no flags. A removed comment is no longer
on the page, so it must not count as one more negative comment or ask for moderation; forwarding it lets
escalation and events see the removal (close what it opened, count it). The text is not scored because
ingest may carry the last text it saw, or none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.sentiment import charter
from services.sentiment.charter import Flag
from services.sentiment.scorers.base import ScoreInput, SentimentScorer
from terrain.contracts import (
    CharterFlag,
    Comment,
    CommentAction,
    CommentMessage,
    ScoredCommentMessage,
    Sentiment,
    SentimentLabel,
)
from terrain.contracts.base import derived_id
from terrain.topics import COMMENTS_SCORED

PRODUCER = "terrain-sentiment"
UNSCORED_MODEL_VERSION = "unscored"
UNKNOWN_LANG = "und"  # ISO 639-2 "undetermined": a removal's language when its source gave none


Flagger = Callable[[str], list[Flag]]


@dataclass(frozen=True)
class Assessment:
    """What the service says about one text: its sentiment and the charter flags it raises (`found`: every
    kind, hate included, as HTTP and the CLI show them; `flags`: as the scored topic carries them)."""

    sentiment: Sentiment
    found: list[Flag] = field(default_factory=list)

    @property
    def flags(self) -> list[CharterFlag]:
        return charter.to_contract(self.found)


def scored_message_id(comment_message_id: str) -> str:
    """The scored message's id, derived from the comment message's: a redelivery republishes the same id,
    so consumers that record processed ids drop the copy."""
    return derived_id(COMMENTS_SCORED.name, comment_message_id)


def unscored(comment: Comment) -> Sentiment:
    return Sentiment(
        label=SentimentLabel.neutral, score=0.0, confidence=0.0,
        lang=comment.lang or UNKNOWN_LANG, model_version=UNSCORED_MODEL_VERSION, drivers=[],
    )


def assess(scorer: SentimentScorer, items: Sequence[ScoreInput], flagger: Flagger = charter.flags_for
           ) -> list[Assessment]:
    """Sentiment and charter flags for each text, in order; `flagger` finds the flags (the service passes the
    charter with the models its settings chose)."""
    sentiments = scorer.score_batch(items)
    return [Assessment(s, flagger(item.text)) for s, item in zip(sentiments, items, strict=True)]


def reach_of(comment: Comment) -> int:
    """How many people engaged with the comment: what makes it matter more (see the cascade scorer)."""
    m = comment.metrics
    return m.likes + m.replies + m.shares


def assess_comments(scorer: SentimentScorer, comments: Sequence[Comment], flagger: Flagger = charter.flags_for
                    ) -> list[Assessment]:
    """Assess each comment; removals get the unscored placeholder (see the module docstring)."""
    live = [c for c in comments if c.action is not CommentAction.removed]
    scored = iter(assess(scorer, [ScoreInput(c.text, c.lang, reach_of(c)) for c in live], flagger))
    return [
        Assessment(unscored(c)) if c.action is CommentAction.removed else next(scored)
        for c in comments
    ]


def first_of_each(messages: Sequence[CommentMessage]) -> list[CommentMessage]:
    """Drop repeats of a message id within a batch (a redelivery can land next to the original)."""
    seen: set[str] = set()
    out: list[CommentMessage] = []
    for m in messages:
        if m.message_id not in seen:
            seen.add(m.message_id)
            out.append(m)
    return out


def scored_message(message: CommentMessage, assessment: Assessment, now: datetime) -> ScoredCommentMessage:
    """The `terrain.comments.scored.v1` message for a comment; it happened when the comment's fact did."""
    return ScoredCommentMessage(
        message_id=scored_message_id(message.message_id),
        occurred_at=message.occurred_at,
        producer=PRODUCER,
        comment=message.comment,
        sentiment=assessment.sentiment,
        flags=assessment.flags,
        scored_at=now,
    )
