"""The engagement definition: one fact per comment (latest version wins), daily rollups, the horizon."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from services.events import engagement
from services.events.engagement import DailyEngagement
from terrain.contracts import ScoredCommentMessage

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def scored(comment_id: str, *, score: float = 0.5, label: str = "positive", revision: int = 1,
           scored_at: datetime = T0, community: str = "restos", created_at: datetime = T0,
           author: str | None = "u1", parent: str | None = None, removed: bool = False,
           likes: int = 0, shares: int = 0, message_id: str | None = None) -> ScoredCommentMessage:
    data: dict[str, Any] = {
        "message_id": message_id or f"m-{comment_id}-{revision}-{scored_at.isoformat()}",
        "occurred_at": scored_at.isoformat(),
        "producer": "terrain-sentiment",
        "comment": {
            "comment_id": comment_id, "revision": revision, "action": "removed" if removed else "created",
            "source": "facebook", "external_id": comment_id, "community_id": community, "thread_id": "t1",
            "parent_id": parent, "author_id": author, "text": "texte", "created_at": created_at.isoformat(),
            "metrics": {"likes": likes, "replies": 0, "shares": shares}, "removed": removed,
        },
        "sentiment": {"label": label, "score": score, "confidence": 0.9, "lang": "fr", "model_version": "v1"},
        "scored_at": scored_at.isoformat(),
    }
    return ScoredCommentMessage.model_validate(data)


def facts(*messages: ScoredCommentMessage) -> list[engagement.CommentFact]:
    return [engagement.fact_of(m) for m in messages]


def test_a_fact_keeps_no_text_and_only_a_key_for_the_author() -> None:
    f = engagement.fact_of(scored("c1", author="fb-user-42", likes=3, shares=2, parent="c0"))
    assert f.author_key is not None and "fb-user-42" not in f.author_key
    assert (f.is_reply, f.reactions, f.day) == (True, 5, date(2026, 11, 20))
    assert not hasattr(f, "text")


def test_the_day_is_the_utc_day_of_writing() -> None:
    late_in_paris = datetime.fromisoformat("2026-11-21T00:30:00+01:00")
    assert engagement.fact_of(scored("c1", created_at=late_in_paris)).day == date(2026, 11, 20)


def test_the_definition_on_one_day() -> None:
    rows = engagement.rollup(facts(
        scored("c1", score=0.8, label="positive", author="a", likes=4),
        scored("c2", score=-0.6, label="negative", author="a", parent="c1", shares=1),
        scored("c3", score=0.1, label="neutral", author=None),
        # Removed at the source: not counted at all.
        scored("c4", score=-1.0, label="negative", author="b", removed=True),
        # Another community, another row.
        scored("c5", community="voyageurs"),
    ))
    day = rows[("restos", date(2026, 11, 20))]
    assert (day.comments, day.unique_authors, day.replies, day.reactions) == (3, 1, 1, 5)
    assert (day.positive_share, day.negative_share) == (1 / 3, 1 / 3)
    assert day.mean_sentiment is not None and abs(day.mean_sentiment - 0.1) < 1e-12
    assert rows[("voyageurs", date(2026, 11, 20))].comments == 1


def test_a_redelivered_or_rescored_comment_is_counted_once_with_its_latest_score() -> None:
    first = scored("c1", score=-0.5, label="negative")
    rescored = scored("c1", score=0.4, label="positive", scored_at=T0 + timedelta(hours=1))
    edited = scored("c2", score=-0.2, label="negative", revision=2)
    original = scored("c2", score=0.9, label="positive", revision=1, scored_at=T0 + timedelta(hours=5))
    day = engagement.rollup(facts(first, rescored, first, edited, original))[("restos", date(2026, 11, 20))]
    # c1's re-score replaced it; c2's edit (revision 2) wins over a later-scored revision 1.
    assert (day.comments, day.positive, day.negative) == (2, 1, 1)
    assert day.sentiment_sum == 0.4 - 0.2


def test_the_horizon_leaves_out_days_whose_facts_were_purged() -> None:
    now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    first_day = engagement.horizon(now, 30)
    assert first_day == date(2026, 10, 26)
    old = engagement.fact_of(scored("old", created_at=datetime(2026, 10, 25, 23, 0, tzinfo=UTC)))
    new = engagement.fact_of(scored("new", created_at=datetime(2026, 10, 26, 0, 0, tzinfo=UTC)))
    kept, too_old = engagement.split_by_horizon([old, new], first_day)
    assert [f.comment_id for f in kept] == ["new"] and too_old == 1


def test_an_empty_day_has_no_shares_and_no_mean() -> None:
    empty = DailyEngagement("restos", date(2026, 11, 20), 0, 0, 0, 0, 0, 0, 0.0)
    assert (empty.positive_share, empty.negative_share, empty.mean_sentiment) == (None, None, None)
    assert empty.as_dict()["comments"] == 0
