"""The names other code imports from here (`make_scorer`, `ScoreInput`, the lexicon scorer's helpers), kept
as they were: the scorers themselves live in `services.sentiment.scorers`, one module each."""

from __future__ import annotations

from services.sentiment.scorers import DEFAULT_SCORER, SCORER_NAMES, make_scorer
from services.sentiment.scorers.base import MAX_DRIVERS, ScoreInput, SentimentScorer
from services.sentiment.scorers.language import (
    DEFAULT_LANG,
    DETECTABLE_LANGS,
    MIN_DETECT_PROB,
    MIN_DETECT_PROB_OTHER,
    detect_language,
    language_of,
)
from services.sentiment.scorers.lexicon import (
    LEXICON_MODEL_VERSION,
    MAX_SCORED_CHARS,
    NEGATIVE_AT,
    POSITIVE_AT,
    LexiconScorer,
    confidence_for,
    label_for,
    lexicon_lang,
)

__all__ = [
    "DEFAULT_LANG", "DEFAULT_SCORER", "DETECTABLE_LANGS", "LEXICON_MODEL_VERSION", "MAX_DRIVERS",
    "MAX_SCORED_CHARS", "MIN_DETECT_PROB", "MIN_DETECT_PROB_OTHER", "NEGATIVE_AT", "POSITIVE_AT",
    "SCORER_NAMES", "LexiconScorer", "ScoreInput", "SentimentScorer", "confidence_for", "detect_language",
    "label_for", "language_of", "lexicon_lang", "make_scorer",
]
