"""Sentiment's pure logic: deterministic ids, removals forwarded unscored, batch dedup, the scored message."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from services.sentiment.domain import (
    PRODUCER,
    UNSCORED_MODEL_VERSION,
    assess,
    assess_comments,
    first_of_each,
    scored_message,
    scored_message_id,
)
from services.sentiment.scorers import make_scorer
from services.sentiment.scorers.base import ScoreInput
from terrain.contracts import Comment, CommentAction, CommentMessage, Sentiment, SentimentLabel
from terrain.contracts.base import derived_id

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
HAPPENED = datetime(2026, 11, 25, 11, 58, tzinfo=UTC)


class FakeScorer:
    """Records what it was asked to score; labels by a keyword so the tests can follow each item."""

    model_version = "fake-1"

    def __init__(self) -> None:
        self.seen: list[ScoreInput] = []

    def score_batch(self, items: Sequence[ScoreInput]) -> list[Sentiment]:
        self.seen += items
        return [
            Sentiment(label=SentimentLabel.negative if "bad" in i.text else SentimentLabel.positive,
                      score=-0.5 if "bad" in i.text else 0.5, confidence=0.6, lang=i.lang or "fr",
                      model_version=self.model_version)
            for i in items
        ]


def msg(mid: str, text: str = "good", action: CommentAction = CommentAction.created, lang: str | None = None
        ) -> CommentMessage:
    comment = Comment(source="facebook", external_id=mid, community_id="resto-lyon", thread_id="p1", text=text,
                      created_at=HAPPENED, lang=lang, comment_id=f"c-{mid}", action=action)
    return CommentMessage(message_id=mid, occurred_at=HAPPENED, producer="terrain-ingest", comment=comment)


def test_scored_id_is_derived_from_the_comment_message_id():
    assert scored_message_id("m-1") == scored_message_id("m-1")  # a redelivery republishes the same id
    assert scored_message_id("m-1") != scored_message_id("m-2")
    assert scored_message_id("m-1") == derived_id("terrain.comments.scored.v1", "m-1")


def test_removals_are_forwarded_unscored_and_unflagged():
    scorer = FakeScorer()
    comments = [msg("1", "bad").comment, msg("2", "connard bad", CommentAction.removed, "en").comment,
                msg("3", "good", CommentAction.edited).comment]
    out = assess_comments(scorer, comments)
    assert [s.text for s in scorer.seen] == ["bad", "good"]  # the removal never reaches the scorer
    assert [a.sentiment.label.value for a in out] == ["negative", "neutral", "positive"]
    removal = out[1]
    assert (removal.sentiment.score, removal.sentiment.confidence, removal.sentiment.model_version) == (
        0.0, 0.0, UNSCORED_MODEL_VERSION)
    assert removal.sentiment.lang == "en" and removal.flags == []  # no insult flag on a removed comment


def test_assess_passes_language_and_flags():
    scorer = FakeScorer()
    out = assess(scorer, [ScoreInput("bad, t'es un connard", "fr"), ScoreInput("good", "en")])
    assert scorer.seen[1].lang == "en"
    assert [f.kind for f in out[0].flags] == ["insult"] and out[1].flags == []


def test_first_of_each_drops_repeats_in_a_batch():
    batch = [msg("a"), msg("b"), msg("a", "changed?")]
    assert [(m.message_id, m.comment.text) for m in first_of_each(batch)] == [("a", "good"), ("b", "good")]


def test_scored_message():
    m = msg("m-7", "bad")
    [a] = assess_comments(FakeScorer(), [m.comment])
    out = scored_message(m, a, NOW)
    assert out.message_id == scored_message_id("m-7")
    assert (out.occurred_at, out.scored_at, out.producer) == (HAPPENED, NOW, PRODUCER)
    assert out.comment == m.comment and out.sentiment.label is SentimentLabel.negative


DETERMINISM_TEXTS = [
    "Service déplorable et serveur très désagréable, je suis furieux !", "Vivement l'an prochain !!",
    "À quelle heure ouvre la boutique ?", "Loved the new menu, great job team!", "Oh great, my order is late again.",
    "t'es un connard", "Livraison en retard de deux semaines, aucune réponse du service client.",
    "Merci Julie pour ta gentillesse, à très vite !",
]


@pytest.mark.parametrize("name", ["lexicon", "fast"])
def test_a_comment_gets_the_same_scored_message_whatever_batch_it_arrives_in(name: str):
    # A redelivery can land in a different batch (other neighbours, another order, another size): the scored
    # message's id is derived from the comment message's, so its content must not change either.
    scorer = make_scorer(name)
    messages = [msg(f"m{i}", text, lang=None) for i, text in enumerate(DETERMINISM_TEXTS)]
    alone = {m.message_id: scored_message(m, assess_comments(scorer, [m.comment])[0], NOW) for m in messages}
    rng = random.Random(3)
    for size in (2, 3, len(messages)):
        shuffled = messages[:]
        rng.shuffle(shuffled)
        for start in range(0, len(shuffled), size):
            batch = shuffled[start:start + size]
            for m, a in zip(batch, assess_comments(scorer, [x.comment for x in batch]), strict=True):
                assert scored_message(m, a, NOW) == alone[m.message_id], (name, size, m.comment.text)
    # And a fresh scorer (a restarted replica) gives the same answers.
    again = make_scorer(name)
    for m in messages:
        assert scored_message(m, assess_comments(again, [m.comment])[0], NOW) == alone[m.message_id]
