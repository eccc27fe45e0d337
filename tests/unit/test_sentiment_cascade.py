"""The cascade scorer: which comments go to the accurate tier and why (a stable rule, item by item), the
optional budget, the combined output, and that a comment's score never depends on its batch."""

from __future__ import annotations

import random

import numpy as np
import pytest

from services.sentiment.scorers.base import ScoreInput
from services.sentiment.scorers.cascade import (
    AccurateBudget,
    CascadePolicy,
    CascadeScorer,
    Reason,
    combine,
    reason_for,
    route,
)
from terrain.contracts import SentimentLabel

POLICY = CascadePolicy(unsure_below=0.6, negative_at=0.5, reach_at=50)

#            P(neg), P(neu), P(pos), reach, expected reason
ROUTING_TABLE = [
    ((0.05, 0.05, 0.90), 0, None),  # confident positive, low reach: the fast tier is trusted
    ((0.05, 0.05, 0.90), 49, None),  # just below the reach threshold
    ((0.05, 0.05, 0.90), 50, Reason.reach),  # high reach: escalated even when the fast tier is sure
    ((0.30, 0.35, 0.35), 0, Reason.unsure),  # no class above 0.6: unsure
    ((0.10, 0.31, 0.59), 0, Reason.unsure),  # top class just below the line
    ((0.10, 0.30, 0.60), 0, None),  # top class exactly on the line counts as sure
    ((0.50, 0.10, 0.40), 0, Reason.negative),  # negative-leaning
    ((0.95, 0.03, 0.02), 0, Reason.negative),  # confidently negative still goes: it may open an incident
    ((0.45, 0.05, 0.50), 0, Reason.unsure),  # below negative_at, and unsure
    ((0.70, 0.10, 0.20), 500, Reason.reach),  # several reasons: reach is reported first
]


@pytest.mark.parametrize(("proba", "reach", "expected"), ROUTING_TABLE)
def test_routing_decisions(proba, reach, expected):
    assert route(np.array([proba]), [reach], POLICY) == [expected]
    assert reason_for(np.array(proba), reach, POLICY) is expected


def test_the_default_policy_checks_negatives_and_far_reaching_comments_only():
    policy = CascadePolicy()
    assert reason_for(np.array([0.34, 0.33, 0.33]), 0, policy) is None  # unsure alone is not enough
    assert reason_for(np.array([policy.negative_at, 0.0, 1 - policy.negative_at]), 0, policy) is Reason.negative
    assert reason_for(np.array([0.0, 0.0, 1.0]), policy.reach_at, policy) is Reason.reach


def test_combined_probabilities_are_valid_and_weighted():
    fast = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    accurate = np.array([[0.8, 0.1, 0.1], [0.0, 0.0, 1.0]])
    mixed = combine(fast, accurate, 0.25)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0)
    assert (mixed >= 0).all()
    np.testing.assert_allclose(mixed[0], 0.25 * fast[0] + 0.75 * accurate[0])
    np.testing.assert_allclose(combine(fast, accurate, 1.0), fast)


class Fixed:
    """A ProbaModel answering from a text → probabilities table, counting what it was asked."""

    classes = ("negative", "neutral", "positive")

    def __init__(self, version, table):
        self.model_version = version
        self.table = table
        self.asked: list[str] = []

    def predict_proba(self, items):
        self.asked.extend(item.text for item in items)
        return np.array([self.table[item.text] for item in items], dtype=np.float64)


def test_cascade_sends_only_routed_items_to_the_accurate_tier_and_records_counts():
    fast = Fixed("fast-x", {"merci !": [0.02, 0.08, 0.90], "bof": [0.55, 0.20, 0.25],
                            "super !": [0.05, 0.05, 0.90]})
    accurate = Fixed("e5-y", {"bof": [0.80, 0.15, 0.05], "super !": [0.10, 0.10, 0.80]})
    records = []
    cascade = CascadeScorer(fast, accurate, CascadePolicy(fast_weight=0.5),
                            record=lambda n, esc, over: records.append((n, dict(esc), over)))
    items = [ScoreInput("merci !", "fr"), ScoreInput("bof", "fr"), ScoreInput("super !", "fr", reach=120)]
    out = cascade.score_batch(items)
    assert accurate.asked == ["bof", "super !"]
    assert records == [(3, {Reason.negative: 1, Reason.reach: 1}, 0)]
    assert cascade.model_version == "cascade-2(fast-x+e5-y)"
    assert [s.label for s in out] == [SentimentLabel.positive, SentimentLabel.negative, SentimentLabel.positive]
    # "bof": (0.55+0.80)/2 negative, (0.25+0.05)/2 positive
    assert out[1].score == pytest.approx(0.15 - 0.675, abs=1e-4)
    assert out[1].confidence == pytest.approx(0.675, abs=1e-4)
    assert all(s.model_version == cascade.model_version for s in out)
    proba = cascade.predict_proba(items)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert cascade.items_total == 6 and cascade.escalated_total == 4


def test_a_comment_scores_the_same_whatever_batch_it_arrives_in():
    # Many comments qualify for the accurate tier (the first version capped them per batch, so a comment's
    # result depended on its neighbours); every batch, order and size must give each comment one answer.
    rng = random.Random(7)
    table = {}
    for i in range(40):
        p = np.array([rng.random() for _ in range(3)])
        table[f"c{i}"] = (p / p.sum()).tolist()
    accurate_table = {k: list(reversed(v)) for k, v in table.items()}
    cascade = CascadeScorer(Fixed("f", table), Fixed("a", accurate_table), CascadePolicy(negative_at=0.3))
    items = [ScoreInput(k, "fr", reach=rng.choice([0, 0, 0, 80])) for k in table]
    alone = {item.text: cascade.score_batch([item])[0] for item in items}
    assert sum(reason_for(np.array(table[i.text]), i.reach, cascade.policy) is not None for i in items) > 10
    for size in (2, 7, 40):
        shuffled = items[:]
        rng.shuffle(shuffled)
        for start in range(0, len(shuffled), size):
            batch = shuffled[start:start + size]
            for item, s in zip(batch, cascade.score_batch(batch), strict=True):
                assert s == alone[item.text], (item.text, size)


def test_budget_is_a_token_bucket_on_the_injected_clock():
    now = [0.0]
    budget = AccurateBudget(per_second=2, burst=4, clock=lambda: now[0])
    assert budget.take(3) == 3  # the burst allows 4 at once
    assert budget.take(3) == 1
    assert budget.take(1) == 0
    now[0] = 1.0  # two more tokens a second
    assert budget.take(5) == 2
    now[0] = 100.0  # never more than the burst
    assert budget.take(10) == 4
    with pytest.raises(ValueError):
        AccurateBudget(per_second=0)


def test_over_budget_a_comment_keeps_the_fast_result_and_says_so():
    now = [0.0]
    fast = Fixed("fast-x", {"a": [0.7, 0.2, 0.1], "b": [0.6, 0.2, 0.2], "c": [0.1, 0.1, 0.8]})
    accurate = Fixed("e5-y", {"a": [0.1, 0.1, 0.8], "b": [0.1, 0.1, 0.8]})
    records = []
    cascade = CascadeScorer(fast, accurate, budget=AccurateBudget(1, burst=1, clock=lambda: now[0]),
                            record=lambda n, esc, over: records.append(over))
    out = cascade.score_batch([ScoreInput("a"), ScoreInput("b"), ScoreInput("c")])
    assert accurate.asked == ["a"]  # one token: the first qualifying comment of the batch
    assert [s.model_version for s in out] == [cascade.model_version, "fast-x", cascade.model_version]
    assert out[1].label is SentimentLabel.negative and out[1].confidence == pytest.approx(0.6)
    assert records == [1] and cascade.over_budget_total == 1


def test_cascade_with_empty_batch():
    cascade = CascadeScorer(Fixed("f", {}), Fixed("a", {}))
    assert cascade.score_batch([]) == []
    assert cascade.predict_proba([]).shape == (0, 3)
