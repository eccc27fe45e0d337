"""Cascade scorer: the fast scorer on every comment, the accurate one where it matters, by a stable rule.

- The fast tier scores every comment. A comment goes on to the accurate tier when its own fast
  probabilities or its own reach say so (`reason_for`): it leans negative (P(negative) at least
  `negative_at`: a negative comment may open an incident, so the better model checks it), the fast tier
  is unsure (top probability below `unsure_below`), or it reaches many people (likes + replies + shares at
  least `reach_at`).
- Determinism: the rule reads the comment alone, never the rest of its batch, so the same comment gets the
  same score whatever batch it arrives in, and a redelivery publishes the same content under the same id.
  (The first version capped the escalated share per batch, which made a comment's result depend on its
  neighbours.)
- Cost: the escalated share is a property of the traffic and of the thresholds, measured in
  bench/bench_sentiment_cascade.py. An optional per-process budget (`AccurateBudget`, a token bucket on an
  injected clock) bounds the accurate tier's calls per second under a flood: past it, a comment keeps its
  fast-tier result and says so (`model_version` is the fast tier's), so a reader can always tell which
  model spoke. Off by default: with it on, a comment's result during a flood depends on the load.
- An escalated comment's probabilities are a weighted average of both tiers (`fast_weight`); the others
  keep the fast tier's.

Pure apart from the models it is given: counts go to an injected recorder (the service passes one that
updates its Prometheus counters).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from services.sentiment.scorers.base import CLASSES, NEGATIVE, ProbaModel, ScoreInput, sentiment_from_proba
from services.sentiment.scorers.language import language_of
from services.sentiment.scorers.lexicon import lexicon_drivers
from terrain.contracts import Sentiment, SentimentLabel

CASCADE_VERSION = "cascade-2"


class Reason(StrEnum):
    """Why an item was escalated (also a metric label: keep the set small and fixed)."""

    reach = "reach"
    negative = "negative"
    unsure = "unsure"


@dataclass(frozen=True)
class CascadePolicy:
    # Fast-tier P(negative) from which the accurate tier checks a comment (see bench_sentiment_cascade.py).
    negative_at: float = 0.5
    # Off by default (0): unsure comments were rarely negative, and routing them costs accurate-tier time.
    unsure_below: float = 0.0
    reach_at: int = 50
    # Tuned on a held-out quarter of train (fast and accurate fitted on the rest): 0.2-0.3 averaged best over
    # FR tweets + EN.
    fast_weight: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.fast_weight <= 1.0 or not 0.0 <= self.negative_at <= 1.0:
            raise ValueError("negative_at and fast_weight must be within [0, 1]")


def reason_for(proba: np.ndarray, reach: int, policy: CascadePolicy) -> Reason | None:
    """Why one item goes to the accurate tier, the strongest reason first, or None; reads that item only."""
    if reach >= policy.reach_at:
        return Reason.reach
    if proba[NEGATIVE] >= policy.negative_at:
        return Reason.negative
    if proba.max() < policy.unsure_below:
        return Reason.unsure
    return None


def route(fast_proba: np.ndarray, reaches: Sequence[int], policy: CascadePolicy) -> list[Reason | None]:
    """Per item, why it goes to the accurate tier (None: it does not); item by item, pure."""
    return [reason_for(p, n, policy) for p, n in zip(fast_proba, reaches, strict=True)]


def combine(fast: np.ndarray, accurate: np.ndarray, fast_weight: float) -> np.ndarray:
    """Weighted average of two probability matrices (rows still sum to 1)."""
    mixed = fast_weight * np.asarray(fast, dtype=np.float64) + (1.0 - fast_weight) * np.asarray(accurate)
    out: np.ndarray = mixed / mixed.sum(axis=1, keepdims=True)
    return out


class AccurateBudget:
    """A token bucket: at most `per_second` accurate-tier comments a second on average, `burst` at once.

    Thread-safe (the service scores HTTP requests and topic batches in worker threads)."""

    def __init__(self, per_second: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        self.per_second = per_second
        self.burst = burst if burst is not None else per_second
        self.clock = clock
        self._tokens = self.burst
        self._at = clock()
        self._lock = threading.Lock()

    def take(self, wanted: int) -> int:
        """How many of `wanted` comments may go to the accurate tier now (0 to wanted)."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
            self._at = now
            granted = min(wanted, int(self._tokens))
            self._tokens -= granted
            return granted


Recorder = Callable[[int, Counter[Reason], int], None]


def no_record(items: int, escalated: Counter[Reason], over_budget: int) -> None:
    """The default recorder: counts are kept on the scorer only."""


class CascadeScorer:
    """Fast tier everywhere, accurate tier where the stable rule says: a ProbaModel and a SentimentScorer."""

    classes = CLASSES

    def __init__(self, fast: ProbaModel, accurate: ProbaModel, policy: CascadePolicy | None = None,
                 record: Recorder = no_record, budget: AccurateBudget | None = None) -> None:
        self.fast = fast
        self.accurate = accurate
        self.policy = policy or CascadePolicy()
        self.record = record
        self.budget = budget
        self.model_version = f"{CASCADE_VERSION}({fast.model_version}+{accurate.model_version})"
        self.items_total = 0
        self.escalated_total = 0
        self.over_budget_total = 0

    def _proba(self, items: Sequence[ScoreInput]) -> tuple[np.ndarray, list[bool]]:
        """Probabilities, and per item whether the budget sent it back to the fast tier alone."""
        fast = np.asarray(self.fast.predict_proba(items), dtype=np.float64)
        reasons = route(fast, [item.reach for item in items], self.policy)
        wanted = [i for i, r in enumerate(reasons) if r is not None]
        granted = len(wanted) if self.budget is None else self.budget.take(len(wanted))
        # Over budget, the first comments of the batch keep their place (the batch is in arrival order).
        chosen, skipped = wanted[:granted], len(wanted) - granted
        if chosen:
            accurate = self.accurate.predict_proba([items[i] for i in chosen])
            fast[chosen] = combine(fast[chosen], accurate, self.policy.fast_weight)
        self.items_total += len(items)
        self.escalated_total += len(chosen)
        self.over_budget_total += skipped
        self.record(len(items), Counter(r for r in (reasons[i] for i in chosen) if r is not None), skipped)
        sent_back = [False] * len(items)
        for i in wanted[granted:]:
            sent_back[i] = True
        return fast, sent_back

    def predict_proba(self, items: Sequence[ScoreInput]) -> np.ndarray:
        if not items:
            return np.zeros((0, len(CLASSES)))
        return self._proba(items)[0]

    def score_batch(self, items: Sequence[ScoreInput]) -> list[Sentiment]:
        if not items:
            return []
        proba, sent_back = self._proba(items)
        langs = [language_of(item.text, item.lang) for item in items]
        explain = getattr(self.fast, "explain", None)
        if callable(explain):
            drivers = explain(items, proba)
        else:
            drivers = [lexicon_drivers(item.text, lang, SentimentLabel(CLASSES[int(np.argmax(row))]))
                       for item, lang, row in zip(items, langs, proba, strict=True)]
        # Which model spoke: the fast tier alone when the budget sent a qualifying comment back.
        versions = [self.fast.model_version if back else self.model_version for back in sent_back]
        return [sentiment_from_proba(row, lang, version, d)
                for row, lang, d, version in zip(proba, langs, drivers, versions, strict=True)]
