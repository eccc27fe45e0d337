"""Sentiment scorers behind one small interface; the default is a licence-clean lexicon scorer (VADER fr+en).

Pure: no I/O beyond loading the lexicons and the language identifier once per process.

Lexicon scorer, in short:
- Language: the comment's own `lang` when the source gives it (ISO 639-2 codes folded), else detected
  with py3langid restricted to a few European languages; when detection is unsure the text is taken as
  French (the first language here).
- Lexicon: English VADER for English, the French VADER port for French and for every other language (we
  have no lexicon for them, and French is the closest fallback for the communities we serve).
  `Sentiment.lang` reports the language of the text (given or detected), so the lexicon used is implied.
- Label: VADER's compound score with VADER's own thresholds (>= 0.05 positive, <= -0.05 negative); wider
  ones (0.1 … 0.4) gained at most 0.003 macro-F1 on the dev sets and mostly lost, so we keep VADER's.
- Confidence: roughly the precision the label showed on the train/dev sets at that |compound|: a polar
  label at |compound| 0.05 was right ~40% of the time, at 0.9+ ~82-87%, hence 0.35 + 0.5·|compound|; a
  neutral label was right ~50% of the time whatever the score, hence a flat 0.5.
- Drivers: the words (and emoji) of the text found in the lexicon, largest |valence| first, at most 5.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from terrain.contracts import Sentiment, SentimentLabel

LEXICON_MODEL_VERSION = "lexicon-vader-1"
POSITIVE_AT = 0.05
NEGATIVE_AT = -0.05
MAX_DRIVERS = 5
# VADER's negation check is quadratic in the number of words (1 s for 20k characters): the opening of a
# long comment sets its tone, so only the first part is scored.
MAX_SCORED_CHARS = 5_000

DEFAULT_LANG = "fr"
# Languages the detector may answer; the set is small so that short texts are not labelled with some
# exotic language, and wide enough to tell an English or Spanish comment from a French one.
DETECTABLE_LANGS = ("fr", "en", "es", "de", "it", "pt", "nl")
# Below these detector probabilities the text is taken as French. English needs less evidence than the
# rest because it has a lexicon of its own; another language only changes the reported `lang`.
MIN_DETECT_PROB = {"en": 0.3}
MIN_DETECT_PROB_OTHER = 0.6


class ScoreInput(NamedTuple):
    """A text to score, its language when known (ISO 639-1, else None to detect it), and its reach (likes +
    replies + shares: the cascade scorer sends far-reaching comments to its accurate tier)."""

    text: str
    lang: str | None = None
    reach: int = 0


class SentimentScorer(Protocol):
    """What the service needs from a scorer; learned scorers can be added beside the lexicon one."""

    model_version: str

    def score_batch(self, items: Sequence[ScoreInput]) -> list[Sentiment]:
        """One Sentiment per input, in order. Must be deterministic: redeliveries must score the same."""
        ...


def label_for(compound: float) -> SentimentLabel:
    if compound >= POSITIVE_AT:
        return SentimentLabel.positive
    if compound <= NEGATIVE_AT:
        return SentimentLabel.negative
    return SentimentLabel.neutral


def confidence_for(label: SentimentLabel, compound: float) -> float:
    """Approximate precision of `label` at this compound score (see the module docstring)."""
    if label is SentimentLabel.neutral:
        return 0.5
    return round(min(1.0, 0.35 + 0.5 * abs(compound)), 3)


# --- language -----------------------------------------------------------------------------------------

_NOT_LANGUAGE = re.compile(r"https?://\S+|www\.\S+|\S+@\S+|@\w+|#|\d+")


@functools.cache
def _identifier() -> Any:
    # Our own identifier instance, so restricting its languages does not touch py3langid's global one.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(list(DETECTABLE_LANGS))
    return ident


def detect_language(text: str) -> str:
    """The language of a text among DETECTABLE_LANGS, or French when the detector is unsure."""
    # Links, mentions, hashtags' marks and numbers say nothing about the language and skew short texts.
    cleaned = " ".join(_NOT_LANGUAGE.sub(" ", text).split())
    if not any(ch.isalpha() for ch in cleaned):
        return DEFAULT_LANG
    best, prob = _identifier().classify(cleaned)
    lang = str(best)
    if lang == DEFAULT_LANG:
        return lang
    return lang if prob >= MIN_DETECT_PROB.get(lang, MIN_DETECT_PROB_OTHER) else DEFAULT_LANG


# Sources may give ISO 639-2 codes; "und" (undetermined) means they do not know.
_ISO_639_2 = {"eng": "en", "fra": "fr", "fre": "fr", "spa": "es", "deu": "de", "ger": "de", "ita": "it",
              "por": "pt", "nld": "nl", "dut": "nl"}


def language_of(text: str, given: str | None) -> str:
    """The given language (as a two-letter code when we know one), else the detected one."""
    if given and given != "und":
        return _ISO_639_2.get(given, given)
    return detect_language(text)


def lexicon_lang(lang: str) -> str:
    """Which lexicon scores a language: English VADER for English, the French one for everything else."""
    return "en" if lang == "en" else "fr"


# --- lexicons -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Lexicon:
    analyzer: Any
    valences: dict[str, float]
    emojis: dict[str, str]
    split: Callable[[str], list[str]]
    key: Callable[[str], str]


def _fold_accents(word: str) -> str:
    # The French lexicon is keyed without accents (the port strips them with unidecode when loading).
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


def _strip_punct(token: str) -> str:
    # As VADER does: strip surrounding punctuation unless that leaves an emoticon-sized token.
    stripped = token.strip(string.punctuation)
    return token if len(stripped) <= 2 else stripped


@functools.cache
def _lexicon(lang: str) -> _Lexicon:
    if lang == "en":
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer as EnglishAnalyzer

        en = EnglishAnalyzer()
        return _Lexicon(en, en.lexicon, en.emojis, str.split, str.lower)
    with warnings.catch_warnings():
        # The French port imports fuzzywuzzy, which warns about a slow matcher we never use.
        warnings.filterwarnings("ignore", message=".*SequenceMatcher.*", category=UserWarning)
        from vaderSentiment_fr.vaderSentiment import SentimentIntensityAnalyzer as FrenchAnalyzer
    fr = FrenchAnalyzer()
    return _Lexicon(
        fr, fr.lexicon, fr.emojis,
        lambda text: re.split(r"[\s']", text),
        lambda token: _fold_accents(token.lower()),
    )


def _drivers(lex: _Lexicon, text: str) -> list[str]:
    """Lexicon words and emoji of the text, strongest |valence| first (ties: first seen), at most 5."""
    found: dict[str, float] = {}
    for raw in lex.split(text):
        token = _strip_punct(raw)
        if not token or " " in token:
            continue
        valence = lex.valences.get(lex.key(token))
        if valence:
            word = token.lower()
            found[word] = max(found.get(word, 0.0), abs(valence))
    for ch in text:
        description = lex.emojis.get(ch)
        if description and ch not in found:
            strength = max((abs(lex.valences.get(lex.key(w), 0.0)) for w in description.split()), default=0.0)
            if strength:
                found[ch] = strength
    ranked = sorted(found.items(), key=lambda kv: -kv[1])  # sorted() is stable: ties keep text order
    return [word for word, _ in ranked[:MAX_DRIVERS]]


class LexiconScorer:
    """VADER (English) and its French port, routed by language."""

    model_version = LEXICON_MODEL_VERSION

    def __init__(self) -> None:
        # Load everything now so the first batch does not pay for it (and a broken install fails at start).
        for lang in ("fr", "en"):
            _lexicon(lang)
        _identifier()

    def score_one(self, item: ScoreInput) -> Sentiment:
        lang = language_of(item.text, item.lang)
        lex = _lexicon(lexicon_lang(lang))
        # The French port splits words on the ASCII apostrophe only; phones type the typographic one.
        text = item.text[:MAX_SCORED_CHARS].replace("’", "'")
        compound = float(lex.analyzer.polarity_scores(text)["compound"]) if text.strip() else 0.0
        label = label_for(compound)
        return Sentiment(
            label=label,
            score=max(-1.0, min(1.0, compound)),
            confidence=confidence_for(label, compound),
            lang=lang,
            model_version=self.model_version,
            drivers=_drivers(lex, text),
        )

    def score_batch(self, items: Sequence[ScoreInput]) -> list[Sentiment]:
        return [self.score_one(item) for item in items]


SCORERS: dict[str, Callable[[], SentimentScorer]] = {"lexicon": LexiconScorer}


def make_scorer(name: str, model_path: str | None = None) -> SentimentScorer:
    """The scorer a `sentiment_scorer` setting names; `model_path` overrides a learned scorer's shipped model."""
    if name == "fast":
        # Imported here: the learned module imports this one, and numpy/sklearn load only when used.
        from services.sentiment.learned import FastScorer

        return FastScorer(model_path)
    if name == "accurate":
        from services.sentiment.embedding import EmbeddingScorer

        return EmbeddingScorer()
    if name == "cascade":
        from services.sentiment.cascade import CascadeScorer
        from services.sentiment.embedding import EmbeddingScorer
        from services.sentiment.learned import FastScorer

        return CascadeScorer(FastScorer(model_path), EmbeddingScorer())
    try:
        factory = SCORERS[name]
    except KeyError:
        known = ", ".join(sorted({*SCORERS, "fast", "accurate", "cascade"}))
        raise ValueError(f"unknown sentiment scorer {name!r}; known: {known}") from None
    return factory()
