"""Engagement of a community on a day: one definition, computed from scored comments.

Definition (one row per community and UTC day of the comment's ``created_at``; the facts are the
latest known version of each comment, one per comment id):

- ``comments``: comments written that day and not removed at the source.
- ``unique_authors``: distinct known authors among them (comments without an author add none).
- ``replies``: those that answer another comment (they have a parent).
- ``reactions``: likes plus shares the source reported on those comments, as last reported
  (0 where the source gives none: Terrain cannot tell "none" from "not given").
- ``positive_share`` / ``negative_share``: positive (negative) comments over ``comments``.
- ``mean_sentiment``: the mean of the comments' sentiment scores (−1 … +1); undefined on a day
  without comments.

A comment's latest version wins: a higher revision (an edit), then a later scoring (a re-score),
so a redelivered or re-scored comment replaces its fact and is never counted twice. Comments older
than the retention horizon are not counted: their day's rollup was built from facts since purged,
and recomputing it from what is left would be wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from terrain.contracts import ScoredCommentMessage
from terrain.contracts.base import derived_id


@dataclass(frozen=True)
class CommentFact:
    """What engagement needs from one scored comment (no text, and the author only as a key)."""

    comment_id: str
    community_id: str
    day: date
    created_at: datetime
    author_key: str | None
    is_reply: bool
    reactions: int
    label: str
    score: float
    removed: bool
    revision: int
    scored_at: datetime

    @property
    def version(self) -> tuple[int, datetime]:
        return (self.revision, self.scored_at)


def fact_of(message: ScoredCommentMessage) -> CommentFact:
    c = message.comment
    author = derived_id("author", c.source.lower(), c.author_id) if c.author_id else None
    return CommentFact(
        comment_id=c.comment_id,
        community_id=c.community_id,
        day=utc_day(c.created_at),
        created_at=c.created_at,
        author_key=author,
        is_reply=c.parent_id is not None,
        reactions=c.metrics.likes + c.metrics.shares,
        label=message.sentiment.label.value,
        score=message.sentiment.score,
        removed=c.removed or c.action.value == "removed",
        revision=c.revision,
        scored_at=message.scored_at,
    )


def utc_day(at: datetime) -> date:
    offset = at.utcoffset() or timedelta(0)
    return (at.replace(tzinfo=None) - offset).date()


def latest(facts: Iterable[CommentFact]) -> list[CommentFact]:
    """One fact per comment id: its latest version (ties keep the first seen)."""
    best: dict[str, CommentFact] = {}
    for f in facts:
        kept = best.get(f.comment_id)
        if kept is None or f.version > kept.version:
            best[f.comment_id] = f
    return list(best.values())


def horizon(now: datetime, retention_days: int) -> date:
    """The first day still counted: facts of earlier days are purged and not recounted."""
    return utc_day(now) - timedelta(days=retention_days)


def split_by_horizon(facts: Sequence[CommentFact], first_day: date) -> tuple[list[CommentFact], int]:
    """(facts to count, how many were too old)."""
    kept = [f for f in facts if f.day >= first_day]
    return kept, len(facts) - len(kept)


@dataclass(frozen=True)
class DailyEngagement:
    """The rollup of one community on one day (see the module docstring)."""

    community_id: str
    day: date
    comments: int
    unique_authors: int
    replies: int
    reactions: int
    positive: int
    negative: int
    sentiment_sum: float

    @property
    def positive_share(self) -> float | None:
        return self.positive / self.comments if self.comments else None

    @property
    def negative_share(self) -> float | None:
        return self.negative / self.comments if self.comments else None

    @property
    def mean_sentiment(self) -> float | None:
        return self.sentiment_sum / self.comments if self.comments else None

    def as_dict(self) -> dict[str, object]:
        return {
            "community_id": self.community_id,
            "day": self.day.isoformat(),
            "comments": self.comments,
            "unique_authors": self.unique_authors,
            "replies": self.replies,
            "reactions": self.reactions,
            "positive_share": self.positive_share,
            "negative_share": self.negative_share,
            "mean_sentiment": self.mean_sentiment,
        }


def rollup(facts: Iterable[CommentFact]) -> dict[tuple[str, date], DailyEngagement]:
    """The definition, in Python: what the SQL rollup must give for the same latest facts."""
    groups: dict[tuple[str, date], list[CommentFact]] = {}
    for f in latest(facts):
        groups.setdefault((f.community_id, f.day), []).append(f)
    out: dict[tuple[str, date], DailyEngagement] = {}
    for (community, day), group in groups.items():
        live = [f for f in group if not f.removed]
        out[(community, day)] = DailyEngagement(
            community_id=community,
            day=day,
            comments=len(live),
            unique_authors=len({f.author_key for f in live if f.author_key is not None}),
            replies=sum(f.is_reply for f in live),
            reactions=sum(f.reactions for f in live),
            positive=sum(f.label == "positive" for f in live),
            negative=sum(f.label == "negative" for f in live),
            sentiment_sum=sum(f.score for f in live),
        )
    return out
