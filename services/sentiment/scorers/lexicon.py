"""The licence-clean lexicon scorer: VADER (English) and its French port, routed by language.

- Lexicon: English VADER for English, the French VADER port for French and for every other language (we
  have no lexicon for them, and French is the closest fallback for the communities we serve).
  `Sentiment.lang` reports the language of the text (given or detected), so the lexicon used is implied.
- Label: VADER's compound score with VADER's own thresholds (>= 0.05 positive, <= -0.05 negative); wider
  ones (0.1 … 0.4) gained at most 0.003 macro-F1 on the dev sets and mostly lost, so we keep VADER's.
- Confidence: a lexicon has no probabilities of its own, so `confidence_for` maps |compound| to
  0.35 + 0.5·|compound| (neutral: 0.5), a fixed, deliberately cautious rule: a negative reaches the
  escalation's respond floor (0.5) only from |compound| 0.3. A table of the precision each label showed on
  the shared training tweets per |compound| band was measured and not adopted: it mostly reflects each
  corpus's class balance, not the lexicon. English negatives were right 66-72 % of the time already below
  |compound| 0.3 (airline complaints make up half of the English tweets) while English positives were right
  9-24 % of the time up to 0.5; French DEFT negatives 37 % below 0.1, 51 % from 0.1, 74 % from 0.2. Fitted
  to that, the floor would page for English mild negatives ("Sad I missed it") more, not less.
- Drivers: the words (and emoji) of the text found in the lexicon, largest |valence| first, at most 5.

Pure: no I/O beyond loading the lexicons and the language identifier once per process.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from services.sentiment.scorers.base import MAX_DRIVERS, ScoreInput
from services.sentiment.scorers.language import identifier, language_of
from terrain.contracts import Sentiment, SentimentLabel

# 2: French set phrases neutralised (see _FRENCH_PHRASES). 3: French words with a borrowed valence and 🔥 count
# for nothing (_FRENCH_NEUTRAL_WORDS, _NEUTRAL_EMOJI); punctuation alone no longer makes a French text negative;
# "super", "extra" and "exceptionnel" count as praise, not as intensifiers. 4: a negation or an intensifier
# no longer reaches past the end of a clause (_clause_barriers), in both languages.
LEXICON_MODEL_VERSION = "lexicon-vader-4"
POSITIVE_AT = 0.05
NEGATIVE_AT = -0.05
# VADER's negation check is quadratic in the number of words (1 s for 20k characters): the opening of a
# long comment sets its tone, so only the first part is scored.
MAX_SCORED_CHARS = 5_000


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


def lexicon_lang(lang: str) -> str:
    """Which lexicon scores a language: English VADER for English, the French one for everything else."""
    return "en" if lang == "en" else "fr"


# --- lexicons -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lexicon:
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


# French lexicon entries whose everyday sense carries no sentiment: the port's valence comes from the English
# word each was translated from or looks like ("sur" from "sure", "prix" from "prize", "s" is the elided "se"
# of "s'il", "fois" is "times", "nouvelle" is "new", "impression" is "j'ai l'impression que"). Chosen by
# what the words mean, not by the labelled files, which only measured the change (bench/README.md). Taken out
# of this process's copy of the lexicon, they are read as neutral words, as any word the lexicon lacks.
_FRENCH_NEUTRAL_WORDS = frozenset({
    "sur", "s", "fois", "part", "prix", "roman", "sous", "nouveau", "nouveaux", "nouvelle", "nouvelles",
    "impression", "completement",
})
_FRENCH_PRAISE_NOT_INTENSIFIERS = ("super", "extra", "exceptionnel", "exceptionnelle", "exceptionnels",
                                   "exceptionnelles")
# Emoji whose lexicon description reads negative but which comments use as praise: 🔥 is "fire" / "feu" to
# VADER (-1.4), "this is great" on a page. Without a description the emoji counts for nothing.
_NEUTRAL_EMOJI = frozenset({"\N{FIRE}"})
# What VADER counts as emphasis: exclamation and question marks, and runs of dots (the French port).
_EMPHASIS = re.compile(r"[!?]|\.{2,}")


def _neutral_punctuation(analyzer: type) -> type:
    """The French port, except that a text whose words sum to zero stays at zero, as in English VADER.

    The port subtracts half the punctuation emphasis from such a text, so "Vivement l'an prochain !!" read
    negative on its two exclamation marks alone; a positive or negative text keeps its emphasis."""

    class NeutralPunctuation(analyzer):  # type: ignore[misc]
        def score_valence(self, sentiments: list[float], text: str) -> dict[str, float]:
            if sentiments and float(sum(sentiments)) == 0.0:
                text = _EMPHASIS.sub("", text)
            result: dict[str, float] = super().score_valence(sentiments, text)
            return result

    return NeutralPunctuation


@functools.cache
def lexicon_for(lang: str) -> Lexicon:
    if lang == "en":
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer as EnglishAnalyzer

        en = EnglishAnalyzer()
        for ch in _NEUTRAL_EMOJI:
            en.emojis.pop(ch, None)
        return Lexicon(en, en.lexicon, en.emojis, str.split, str.lower)
    with warnings.catch_warnings():
        # The French port imports fuzzywuzzy, which warns about a slow matcher we never use.
        warnings.filterwarnings("ignore", message=".*SequenceMatcher.*", category=UserWarning)
        from vaderSentiment_fr import vaderSentiment as french_module
    # The port's list of intensifiers ("très bon") holds adjectives of praise that a comment uses alone:
    # "Super !", "un accueil exceptionnel", "c'est extra". As intensifiers they weighed nothing (and "C'est
    # super !!!" came out negative); out of the list, their own lexicon valence counts. The list is the
    # port's module global: this process is its only user.
    for word in _FRENCH_PRAISE_NOT_INTENSIFIERS:
        french_module.BOOSTER_DICT.pop(word, None)
    fr = _neutral_punctuation(french_module.SentimentIntensityAnalyzer)()
    for word in _FRENCH_NEUTRAL_WORDS:
        fr.lexicon.pop(word, None)
    for ch in _NEUTRAL_EMOJI:
        fr.emojis.pop(ch, None)
    return Lexicon(
        fr, fr.lexicon, fr.emojis,
        lambda text: re.split(r"[\s']", text),
        lambda token: _fold_accents(token.lower()),
    )


# French set phrases whose words, read one by one, say the opposite of the phrase: "pique-niques" holds a
# vulgar "niques", "attendre avec impatience" / "impatient de" is eagerness, "chargé de com" is a job title,
# plural "certains" means "some", not "sure", "sans faute" / "sans doute" mean "for sure" / "probably", and
# "à partir de" means "from", not "to leave". Their misleading words are taken out before scoring (the
# phrase then counts for nothing, rather than for a sentiment of our choosing). Checked on text the lexicon
# never saw: see bench/README.md (lexicon phrases).
_FRENCH_PHRASES = re.compile(
    r"\bpique[- ]?niqu\w*"
    r"|\bavec (?:beaucoup d'|une grande |grande )?impatience\b"
    r"|\bimpatient(?:e|s|es)? (?=d[e'])"
    r"|\bchargé(?:e|s|es)? (?=d[e'u]|des )"
    r"|\bcertain(?:e)?s\b"
    r"|\bsans (?:faute|doute)\b"
    r"|\b[àa] partir(?= d)",
    re.IGNORECASE,
)


def _neutral_phrases(text: str) -> str:
    return _FRENCH_PHRASES.sub(" ", text)


# VADER (and its port) looks up to three words back from a lexicon word for a negation or an intensifier,
# across punctuation: in "Toujours pas remboursé, inadmissible !" the "pas" of the first clause negated the
# "inadmissible" of the second, and the complaint read positive ("Not refunded yet, unacceptable!" too).
# Three words that mean nothing after each clause's end (a comma, a semicolon, a colon, a full stop, an
# exclamation or question mark, an ellipsis, before a space) keep the look-back inside its clause. They are
# in no lexicon and no list of the analyser's, and hold a lowercase letter (the port counts a word with no
# lowercase letter as shouting and amplifies the score), so they add nothing else; the drivers read the text
# as given.
_CLAUSE_END = re.compile(r"(?<=[,;:.!?\u2026])(?=\s)")
_CLAUSE_BARRIER = " \u00a6q\u00a6" * 3


def _clause_barriers(text: str) -> str:
    # A text with no lowercase letter is left as it is: there the barriers would be the only words not in
    # capitals, and both analysers would then read the capitals as shouting.
    if not any(c.islower() for c in text):
        return text
    return _CLAUSE_END.sub(_CLAUSE_BARRIER, text)


def _drivers(lex: Lexicon, text: str) -> list[str]:
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
            lexicon_for(lang)
        identifier()

    def score_one(self, item: ScoreInput) -> Sentiment:
        lang = language_of(item.text, item.lang)
        lex = lexicon_for(lexicon_lang(lang))
        # The French port splits words on the ASCII apostrophe only; phones type the typographic one.
        text = item.text[:MAX_SCORED_CHARS].replace("’", "'")
        if lexicon_lang(lang) == "fr":
            text = _neutral_phrases(text)
        compound = float(lex.analyzer.polarity_scores(_clause_barriers(text))["compound"]) if text.strip() else 0.0
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


def lexicon_drivers(text: str, lang: str, label: SentimentLabel) -> list[str]:
    """Words (and emoji) of the text whose lexicon polarity agrees with the label, strongest first: the
    drivers of a model that has no words of its own to point at (the accurate tier)."""
    if label is SentimentLabel.neutral:
        return []
    lex = lexicon_for(lexicon_lang(lang))
    sign = 1.0 if label is SentimentLabel.positive else -1.0
    found: dict[str, float] = {}
    for raw in lex.split(text.replace("\u2019", "'")):
        token = raw.strip(".,;:!?()[]{}\"'«»…")
        if not token:
            continue
        valence = lex.valences.get(lex.key(token), 0.0)
        if valence * sign > 0:
            found[token.lower()] = max(found.get(token.lower(), 0.0), abs(valence))
    ranked = sorted(found.items(), key=lambda kv: -kv[1])
    return [word for word, _ in ranked[:MAX_DRIVERS]]
