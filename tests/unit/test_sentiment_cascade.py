"""The cascade scorer: which comments go to the accurate tier and why, the cap, and the combined output."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from services.sentiment.cascade import CascadePolicy, CascadeScorer, Reason, combine, route
from services.sentiment.scoring import ScoreInput
from terrain.contracts import SentimentLabel

POLICY = CascadePolicy(unsure_below=0.6, negative_at=0.5, reach_at=50, max_escalated_share=1.0)

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
    routing = route(np.array([proba]), [reach], POLICY)
    assert routing.reasons == [expected]
    assert routing.capped == 0


def test_cap_keeps_the_highest_reach_then_the_least_sure():
    policy = CascadePolicy(unsure_below=0.6, negative_at=0.5, reach_at=50, max_escalated_share=0.3)
    proba = np.array([
        [0.30, 0.35, 0.35],  # 0 unsure (top 0.35)
        [0.05, 0.05, 0.90],  # 1 sure, reach 60
        [0.20, 0.25, 0.55],  # 2 unsure (top 0.55)
        [0.05, 0.05, 0.90],  # 3 sure, reach 900
        [0.05, 0.05, 0.90],  # 4 sure, low reach: never
        [0.34, 0.33, 0.33],  # 5 unsure (top 0.34): the least sure
        [0.05, 0.90, 0.05],  # 6 sure neutral
        [0.80, 0.10, 0.10],  # 7 negative
        [0.05, 0.05, 0.90],  # 8
        [0.05, 0.05, 0.90],  # 9
    ])
    reach = [0, 60, 0, 900, 0, 0, 0, 0, 0, 0]
    routing = route(proba, reach, policy)
    # 10 items × 0.3 = 3 places; 6 qualify: reach 900, reach 60, then the least sure (item 5).
    assert routing.escalated == [1, 3, 5]
    assert routing.capped == 3
    assert Counter(r for r in routing.reasons if r) == {Reason.reach: 2, Reason.unsure: 1}


def test_cap_rounds_up_so_a_single_comment_can_still_escalate():
    policy = CascadePolicy(max_escalated_share=0.02)
    assert route(np.array([[0.3, 0.4, 0.3]]), [0], policy).escalated == [0]
    # 100 unsure items at 2%: exactly 2 go.
    many = route(np.tile([0.3, 0.4, 0.3], (100, 1)), [0] * 100, policy)
    assert many.escalated == [0, 1] and many.capped == 98


def test_zero_share_escalates_nothing():
    routing = route(np.array([[0.3, 0.4, 0.3]]), [1000], CascadePolicy(max_escalated_share=0.0))
    assert routing.escalated == [] and routing.capped == 1


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
    fast = Fixed("fast-x", {"merci !": [0.02, 0.08, 0.90], "bof": [0.35, 0.40, 0.25],
                            "super !": [0.05, 0.05, 0.90]})
    accurate = Fixed("e5-y", {"bof": [0.80, 0.15, 0.05], "super !": [0.10, 0.10, 0.80]})
    records = []
    cascade = CascadeScorer(fast, accurate, CascadePolicy(fast_weight=0.5, max_escalated_share=1.0),
                            record=lambda n, esc, capped: records.append((n, dict(esc), capped)))
    items = [ScoreInput("merci !", "fr"), ScoreInput("bof", "fr"), ScoreInput("super !", "fr", reach=120)]
    out = cascade.score_batch(items)
    assert accurate.asked == ["bof", "super !"]
    assert records == [(3, {Reason.unsure: 1, Reason.reach: 1}, 0)]
    assert cascade.model_version == "cascade-1(fast-x+e5-y)"
    assert [s.label for s in out] == [SentimentLabel.positive, SentimentLabel.negative, SentimentLabel.positive]
    # "bof": (0.35+0.80)/2 negative, (0.25+0.05)/2 positive
    assert out[1].score == pytest.approx(0.15 - 0.575, abs=1e-4)
    assert out[1].confidence == pytest.approx(0.575, abs=1e-4)
    assert all(s.model_version == cascade.model_version for s in out)
    proba = cascade.predict_proba(items)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert cascade.items_total == 6 and cascade.escalated_total == 4


def test_cascade_with_empty_batch():
    cascade = CascadeScorer(Fixed("f", {}), Fixed("a", {}), record=lambda *_: None)
    assert cascade.score_batch([]) == []
    assert cascade.predict_proba([]).shape == (0, 3)
