"""Sentiment scorers behind one interface (`base.SentimentScorer`), one module each, and the registry that
builds the one a setting names. Heavy modules (numpy models, the embedding engine) load only when chosen."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # nothing heavy at import: `terrain --help` reads DEFAULT_SCORER from here
    from services.sentiment.scorers.base import SentimentScorer
    from services.sentiment.scorers.cascade import Recorder

# The one default the service (TERRAIN_SENTIMENT_SCORER) and every `terrain sentiment` command share;
# why this one: services/sentiment/models/MODEL_CARD.md, "Choosing the default".
DEFAULT_SCORER = "lexicon"
SCORER_NAMES = ("lexicon", "fast", "accurate", "cascade")

__all__ = ["DEFAULT_SCORER", "SCORER_NAMES", "make_scorer"]


def make_scorer(name: str = DEFAULT_SCORER, model_path: str | None = None, *, record: Recorder | None = None,
                accurate_per_second: float | None = None) -> SentimentScorer:
    """The scorer `name` names. `model_path` overrides the fast model shipped with the package (fast and
    cascade); `record` receives the cascade's counts; `accurate_per_second` turns on the cascade's budget."""
    if name == "lexicon":
        from services.sentiment.scorers.lexicon import LexiconScorer

        return LexiconScorer()
    if name == "fast":
        from services.sentiment.scorers.fast import FastScorer

        return FastScorer(model_path)
    if name == "accurate":
        from services.sentiment.scorers.accurate import EmbeddingScorer

        return EmbeddingScorer()
    if name == "cascade":
        from services.sentiment.scorers.accurate import EmbeddingScorer
        from services.sentiment.scorers.cascade import AccurateBudget, CascadeScorer, no_record
        from services.sentiment.scorers.fast import FastScorer

        budget = AccurateBudget(accurate_per_second) if accurate_per_second else None
        return CascadeScorer(FastScorer(model_path), EmbeddingScorer(), record=record or no_record, budget=budget)
    raise ValueError(f"unknown sentiment scorer {name!r}; known: {', '.join(SCORER_NAMES)}")
