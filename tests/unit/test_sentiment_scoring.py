"""The lexicon scorer: labels on French and English examples, language routing, drivers, confidence."""

from __future__ import annotations

import pytest

from services.sentiment.scoring import (
    LEXICON_MODEL_VERSION,
    LexiconScorer,
    ScoreInput,
    confidence_for,
    detect_language,
    label_for,
    lexicon_lang,
    make_scorer,
)
from terrain.contracts import SentimentLabel


@pytest.fixture(scope="module")
def scorer() -> LexiconScorer:
    return LexiconScorer()


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Service déplorable, je suis furieux !", "negative"),  # two strong negative words
        ("Le plat était froid et le serveur désagréable.", "negative"),
        ("Quelle honte, arnaque totale", "negative"),
        ("Merci pour l'accueil chaleureux, c'était parfait !", "positive"),
        ("J’adore ce restaurant", "positive"),  # the typographic apostrophe still splits "J’adore"
        ("Ce n'est pas mauvais du tout", "positive"),  # negation flips "mauvais"
        ("à quelle heure ouvre la boutique ?", "neutral"),  # a plain question
        ("Le concert commence à 20h, salle B.", "neutral"),
        ("Terrible service, I am furious!", "negative"),
        ("The food was cold and the waiter rude.", "negative"),
        ("Great welcome, thank you so much, it was delicious!", "positive"),
        ("Not bad at all", "positive"),  # English negation
        ("What time does the shop open?", "neutral"),
        ("", "neutral"),  # nothing to score
    ],
)
def test_labels(scorer: LexiconScorer, text: str, label: str):
    s = scorer.score_one(ScoreInput(text))
    assert s.label.value == label
    assert s.model_version == LEXICON_MODEL_VERSION
    assert -1.0 <= s.score <= 1.0 and 0.0 <= s.confidence <= 1.0


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("à quelle heure ouvre la boutique ?", "fr"),
        ("What time does the shop open tomorrow?", "en"),
        ("¿A qué hora abre la tienda mañana por la tarde?", "es"),  # confidently another language
        ("ok", "fr"),  # too short to tell: French, the first language here
        ("https://example.com @user 12345", "fr"),  # no language at all once links and mentions go
        ("@user I really love this place, see you next week #brunch", "en"),  # mentions and tags ignored
    ],
)
def test_detect_language(text: str, lang: str):
    assert detect_language(text) == lang


def test_given_language_wins_and_routes_the_lexicon(scorer: LexiconScorer):
    text = "I love it, great job"
    detected = scorer.score_one(ScoreInput(text))
    forced_fr = scorer.score_one(ScoreInput(text, "fr"))
    assert (detected.lang, detected.label) == ("en", SentimentLabel.positive)
    # The French lexicon knows none of these English words: the given language really chose the lexicon.
    assert (forced_fr.lang, forced_fr.label, forced_fr.drivers) == ("fr", SentimentLabel.neutral, [])


@pytest.mark.parametrize(
    ("given", "lang"),
    [
        ("en", "en"),
        ("eng", "en"),  # ISO 639-2 codes are folded to two letters, so they route like "en"
        ("fre", "fr"),
        ("und", "fr"),  # "undetermined": detect (French text here)
        (None, "fr"),
    ],
)
def test_language_codes(scorer: LexiconScorer, given: str | None, lang: str):
    assert scorer.score_one(ScoreInput("Service déplorable", given)).lang == lang


def test_other_languages_use_the_french_lexicon_but_keep_their_code(scorer: LexiconScorer):
    assert lexicon_lang("es") == lexicon_lang("fr") == "fr" and lexicon_lang("en") == "en"
    s = scorer.score_one(ScoreInput("Service déplorable", "de"))
    assert s.lang == "de" and s.label is SentimentLabel.negative


def test_drivers_are_the_strongest_lexicon_words(scorer: LexiconScorer):
    s = scorer.score_one(ScoreInput("Service déplorable, je suis furieux !"))
    assert s.drivers == ["déplorable", "furieux"]  # |-1.5| before |-1.1|, as written in the text
    many = scorer.score_one(ScoreInput("super génial parfait merci excellent adorable magnifique", "fr"))
    assert len(many.drivers) == 5
    emoji = scorer.score_one(ScoreInput("Great evening 😀", "en"))
    assert "great" in emoji.drivers and "😀" in emoji.drivers


def test_batch_keeps_order_and_is_deterministic(scorer: LexiconScorer):
    items = [ScoreInput("Service déplorable"), ScoreInput("Great place!"), ScoreInput("à quelle heure ?")]
    first, again = scorer.score_batch(items), scorer.score_batch(items)
    assert [s.label.value for s in first] == ["negative", "positive", "neutral"]
    assert first == again


def test_long_texts_are_bounded(scorer: LexiconScorer):
    s = scorer.score_one(ScoreInput("Service déplorable. " * 2000))  # 40k characters
    assert s.label is SentimentLabel.negative


@pytest.mark.parametrize(
    ("compound", "label", "confidence"),
    [
        (0.0, SentimentLabel.neutral, 0.5),
        (0.049, SentimentLabel.neutral, 0.5),  # just inside the neutral band
        (0.05, SentimentLabel.positive, 0.375),  # barely positive: barely better than a coin
        (-0.05, SentimentLabel.negative, 0.375),
        (-0.9, SentimentLabel.negative, 0.8),  # strongly polar: right most of the time
        (1.0, SentimentLabel.positive, 0.85),
    ],
)
def test_label_and_confidence(compound: float, label: SentimentLabel, confidence: float):
    assert label_for(compound) is label
    assert confidence_for(label, compound) == pytest.approx(confidence)


def test_make_scorer_names_the_known_ones():
    assert make_scorer("lexicon").model_version == LEXICON_MODEL_VERSION
    with pytest.raises(ValueError, match="lexicon"):
        make_scorer("bert")


@pytest.mark.parametrize(
    ("text", "not_label", "label"),
    [
        # Set phrases whose words alone read negative: eagerness, a picnic, a job title.
        ("J’attends la suite de ton enquête avec impatience Laurent !", "negative", None),
        ("Et pour ça les bons vieux moyens sont toujours d’actualité : téléphone, café, pique niques etc.",
         "negative", None),
        ("Bref, le CM est un chargé de com externe comme un autre.", "negative", None),
        # The same words still count where they carry the feeling.
        ("Le pique-nique était raté, nourriture immonde", None, "negative"),
        ("Le colis est arrivé abîmé, je suis impatient d'avoir une réponse, service nul", None, "negative"),
    ],
)
def test_french_set_phrases_do_not_mislead_the_lexicon(scorer: LexiconScorer, text: str, not_label: str | None,
                                                       label: str | None):
    s = scorer.score_one(ScoreInput(text, "fr"))
    if not_label is not None:
        assert s.label.value != not_label, s
    if label is not None:
        assert s.label.value == label, s


@pytest.mark.parametrize(
    ("text", "label"),
    [
        # Words whose lexicon valence was borrowed from an English look-alike now count for nothing.
        ("C'est abusé, les prix ont encore augmenté", "negative"),  # "prix" is not "prize"
        ("Une fois de plus, rien à signaler sur le parking", "neutral"),  # "fois", "sur"
        ("Nouvelle adresse à partir de janvier, même équipe", "neutral"),
        ("On sera là, sans faute", "neutral"),
        # Praise the port took for an intensifier.
        ("Super !", "positive"),
        ("C'est super !!!", "positive"),
        ("Un concert extra", "positive"),
        # 🔥 is praise on a page, not a fire.
        ("Trop hâte d'y être 🔥🔥", "neutral"),
        ("This is 🔥", "neutral"),
    ],
)
def test_borrowed_valences_and_praise(scorer: LexiconScorer, text: str, label: str):
    lang = "en" if text.startswith("This") else "fr"
    assert scorer.score_one(ScoreInput(text, lang)).label.value == label


def test_punctuation_alone_does_not_make_french_negative(scorer: LexiconScorer):
    # No word of it carries a feeling: exclamation marks, question marks and dots leave it neutral.
    for text in ("Vivement l'an prochain !!", "Quoi ???", "On en reparle demain..."):
        s = scorer.score_one(ScoreInput(text, "fr"))
        assert (s.label, s.score) == (SentimentLabel.neutral, 0.0), (text, s)
    # A text with a feeling keeps the port's emphasis: more marks, a stronger score.
    plain = scorer.score_one(ScoreInput("C'est nul", "fr")).score
    loud = scorer.score_one(ScoreInput("C'est nul !!!", "fr")).score
    assert loud < plain < 0


@pytest.mark.parametrize(
    ("text", "lang", "label"),
    [
        # The negation of one clause does not reach the next one (both read positive before).
        ("Toujours pas remboursé, inadmissible !", "fr", "negative"),
        ("Not refunded yet, unacceptable!", "en", "negative"),
        # Inside its clause a negation still works, whatever follows.
        ("Ce n'est pas bon, vraiment.", "fr", "negative"),
        ("It was not good. See you.", "en", "negative"),
    ],
)
def test_a_negation_stays_in_its_clause(scorer: LexiconScorer, text: str, lang: str, label: str):
    s = scorer.score_one(ScoreInput(text, lang))
    assert s.label.value == label, s
    assert all("\u00a6" not in d for d in s.drivers)  # the drivers read the text as given
