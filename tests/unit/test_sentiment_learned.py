"""The fast learned scorer: normalisation, hashed features, training, the model file, the shipped model."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import HashingVectorizer

from services.sentiment.evaluation import evaluate
from services.sentiment.scorers.base import CLASSES, sentiment_from_proba
from services.sentiment.scorers.fast import (
    DEFAULT_MODEL_PATH,
    FastScorer,
    FeatureConfig,
    Featurizer,
    ModelFileError,
    load_model,
    save_model,
)
from services.sentiment.scoring import ScoreInput, make_scorer
from services.sentiment.textnorm import NormConfig, normalize, surface
from services.sentiment.training.fast import train_fast
from terrain.contracts import SentimentLabel

# --- normalisation -------------------------------------------------------------------------------------

# Every step on (the shipped defaults keep only négation: the others did not win on the dev sets).
ALL_STEPS = NormConfig(placeholders=True, caps=True, elongation=True, emoji=True, negation=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # ne … pas: the words between and after the cues are marked, until the comma
        ("je ne l'aime pas du tout, mais bon", ["je", "ne", "NEG_l'", "NEG_aime", "pas", "NEG_du", "NEG_tout",
                                                ",", "mais", "bon"]),
        # "pas" alone (spoken French drops the "ne")
        ("c'est pas bon", ["c'", "est", "pas", "NEG_bon"]),
        # jamais, and the scope ends at the full stop
        ("jamais content. super", ["jamais", "NEG_content", ".", "super"]),
        # English n't becomes "not"
        ("I don't like it", ["i", "do", "not", "NEG_like", "NEG_it"]),
        # the scope is bounded (4 words) when there is no punctuation
        ("not a b c d e", ["not", "NEG_a", "NEG_b", "NEG_c", "NEG_d", "e"]),
    ],
)
def test_negation_scope(text: str, expected: list[str]) -> None:
    assert normalize(text).words == expected
    assert normalize(text, ALL_STEPS).words == expected


def test_negation_can_be_switched_off() -> None:
    assert normalize("c'est pas bon", NormConfig(negation=False)).words == ["c'", "est", "pas", "bon"]


def test_elongation_is_squeezed_and_marked() -> None:
    norm = normalize("trooop bieeeen", ALL_STEPS)
    assert norm.words[:2] == ["troop", "bieen"]
    assert "_elong_" in norm.words
    assert "_elong_" not in normalize("trop bien", ALL_STEPS).words  # double letters are spelling, not shouting


def test_emoji_and_emoticons_become_tokens() -> None:
    words = normalize("top 😍 :) :-( <3", ALL_STEPS).words
    assert words == ["top", "_e1f60d_", "_emo_smile_", "_emo_sad_", "_emo_heart_"]
    assert surface("_e1f60d_") == "😍" and surface("_emo_sad_") == ":("


def test_default_steps_leave_emoji_and_shouting_to_the_char_ngrams() -> None:
    norm = normalize("TROOOP bien 😍 :)")
    assert norm.words == ["trooop", "bien", "😍", ":", ")"]
    assert norm.chars == "trooop bien 😍 :)"


def test_caps_placeholders_and_surface() -> None:
    words = normalize("C'EST NUL @sav voir https://x.fr 12,5 €", ALL_STEPS).words
    assert words[:2] == ["c'", "est"]  # lowercased …
    assert "_caps_" in words  # … but the shouting is kept as a feature
    assert {"_user_", "_url_", "_num_"} <= set(words)
    assert surface("NEG_bon") == "pas bon" and surface("NEG_good", "en") == "not good"


# --- features -----------------------------------------------------------------------------------------


def test_column_of_matches_the_hashing_vectorizer() -> None:
    featurizer = Featurizer(FeatureConfig(word_bits=12))
    reference = HashingVectorizer(analyzer=lambda d: d, n_features=1 << 12, alternate_sign=False, norm=None)
    for token in ("déteste", "NEG_bon", "_e1f60d_", "pas bon", "a"):
        assert reference.transform([[token]]).indices.tolist() == [featurizer.column_of(token)]


def _sklearn_features(config: FeatureConfig, docs: list[tuple[list[str], str]]):  # type: ignore[no-untyped-def]
    """The matrix as sklearn's own vectorizers build it, for the hand-built one to be checked against."""
    import scipy.sparse as sp

    words = HashingVectorizer(analyzer=lambda d: d, n_features=1 << config.word_bits, alternate_sign=False,
                              norm="l2").transform([d[0] for d in docs])
    chars = HashingVectorizer(analyzer="char_wb", ngram_range=(config.char_ngram_min, config.char_ngram_max),
                              n_features=1 << config.char_bits, alternate_sign=False, norm="l2",
                              lowercase=False).transform([d[1] for d in docs])
    return sp.hstack([words, chars * config.char_weight], format="csr")


@pytest.mark.parametrize(
    "config", [FeatureConfig(), FeatureConfig(char_ngram_min=2, char_ngram_max=4, char_weight=0.5)]
)
def test_features_are_sklearns_hashing_vectorizers_on_real_comments(config: FeatureConfig) -> None:
    texts = _comment_texts()
    assert len(texts) > 100
    texts += ["", "a", "ab", "  deux  espaces\tet\nlignes ", "😡😡 NUL !!!", "x" * 3000, "n'est pas bon du tout"]
    featurizer = Featurizer(config)
    docs = [featurizer.tokens(t, "fr") for t in texts]
    ours = featurizer.transform_tokens(docs)
    again = featurizer.transform_tokens(docs)  # from the caches this time
    theirs = _sklearn_features(config, docs)
    assert ours.shape == theirs.shape and ours.nnz == theirs.nnz
    assert abs(ours - theirs).max() < 1e-12 and abs(again - theirs).max() < 1e-12


def _comment_texts() -> list[str]:
    """Real comments shipped with the project: the demo's (the seed article's readers) and the brand smoke set."""
    from datetime import UTC, datetime

    from terrain.demo import demo_comments

    smoke = Path(__file__).resolve().parents[2] / "bench" / "data" / "brand_smoke.jsonl"
    rows = [json.loads(line) for line in smoke.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [c["text"] for c in demo_comments(datetime.now(UTC))] + [r["text"] for r in rows]


def test_features_include_language_and_char_blocks() -> None:
    config = FeatureConfig(word_bits=10, char_bits=10)
    x = Featurizer(config).transform(["super", "super"], ["fr", "en"])
    assert x.shape == (2, 2048)
    assert (x[0] != x[1]).nnz > 0  # the language token differs
    assert x[0, 1024:].nnz > 0  # character n-grams are there


# --- training on a tiny set -----------------------------------------------------------------------------

_POS = ["j'adore", "super", "génial", "merci pour", "top", "bravo pour", "excellent"]
_NEG = ["je déteste", "nul", "honteux", "arnaque", "horrible", "scandaleux", "catastrophe"]
_NEUTRAL = ["à quelle heure ouvre", "où se trouve", "quel est le prix de", "comment contacter", "quand arrive"]
_THINGS = ["la boutique", "le service", "la livraison", "ce produit", "le magasin", "votre équipe"]


def tiny_rows() -> list[tuple[str, str]]:
    rows = []
    for (words, label), thing in itertools.product(
        [(_POS, "positive"), (_NEG, "negative"), (_NEUTRAL, "neutral")], _THINGS
    ):
        for w in words:
            rows.append((f"{w} {thing} !" if label != "neutral" else f"{w} {thing} ?", label))
    return rows


TINY_CONFIG = FeatureConfig(word_bits=14, char_bits=14)


@pytest.fixture(scope="module")
def tiny_model():  # type: ignore[no-untyped-def]
    rows = tiny_rows()
    return train_fast([t for t, _ in rows], ["fr"] * len(rows), [lab for _, lab in rows], config=TINY_CONFIG,
                      metadata={"version": "fast-tiny-test"})


def test_tiny_training_learns_obvious_polarity(tiny_model) -> None:  # type: ignore[no-untyped-def]
    assert len(tiny_rows()) >= 100
    scorer = FastScorer(model=tiny_model)
    unseen = [("génial, votre boutique", "positive"), ("arnaque honteux", "negative"),
              ("où se trouve votre entrepôt ?", "neutral"), ("j'adore !", "positive")]
    got = scorer.score_batch([ScoreInput(t, "fr") for t, _ in unseen])
    assert [s.label.value for s in got] == [lab for _, lab in unseen]
    assert all(s.model_version == "fast-tiny-test" and s.lang == "fr" for s in got)
    assert got[1].score < 0 < got[0].score
    assert "arnaque" in got[1].drivers or "honteux" in got[1].drivers


def test_explain_gives_drivers_toward_the_given_probabilities(tiny_model) -> None:  # type: ignore[no-untyped-def]
    scorer = FastScorer(model=tiny_model)
    items = [ScoreInput("arnaque, mais bravo pour la livraison", "fr")]
    scorer.predict_proba(items)
    # As if another model (the cascade's accurate tier) had said positive, then negative.
    (toward_pos,) = scorer.explain(items, np.array([[0.1, 0.1, 0.8]]))
    (toward_neg,) = scorer.explain(items, np.array([[0.8, 0.1, 0.1]]))
    assert "bravo" in toward_pos and "bravo" not in toward_neg
    assert "arnaque" in toward_neg and "arnaque" not in toward_pos


def test_probabilities_are_rows_summing_to_one(tiny_model) -> None:  # type: ignore[no-untyped-def]
    proba = FastScorer(model=tiny_model).predict_proba([ScoreInput("super", "fr"), ScoreInput("", "en")])
    assert proba.shape == (2, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


def test_binary_data_trains_a_three_class_model_that_never_says_neutral() -> None:
    rows = [(t, lab) for t, lab in tiny_rows() if lab != "neutral"]
    model = train_fast([t for t, _ in rows], ["fr"] * len(rows), [lab for _, lab in rows], config=TINY_CONFIG)
    proba = FastScorer(model=model).predict_proba([ScoreInput("où se trouve la boutique ?", "fr")])
    assert proba[0, CLASSES.index("neutral")] < 1e-6


def test_training_rejects_unknown_labels() -> None:
    with pytest.raises(ValueError, match="unknown labels"):
        train_fast(["a", "b"], ["fr", "fr"], ["positive", "great"], config=TINY_CONFIG)


# --- model file -----------------------------------------------------------------------------------------


def test_model_file_round_trip(tiny_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = save_model(tiny_model, tmp_path / "m")
    assert path.suffix == ".npz" and path.with_suffix(".json").is_file()
    loaded = load_model(path)
    items = [ScoreInput(t, "fr") for t, _ in tiny_rows()[:40]]
    before = FastScorer(model=tiny_model).predict_proba(items)
    after = FastScorer(path).predict_proba(items)
    # Weights are stored as float16: probabilities agree to well under a percent.
    np.testing.assert_allclose(after, before, atol=2e-3)
    assert (after.argmax(1) == before.argmax(1)).all()
    assert loaded.version == "fast-tiny-test" and loaded.temperature == pytest.approx(tiny_model.temperature)
    assert load_model(path) is loaded  # loaded once per process
    with np.load(path, allow_pickle=False) as arrays:  # plain arrays: nothing to unpickle
        assert set(arrays.files) == {"columns", "weights", "intercept", "temperature"}


def test_model_file_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "missing.npz")
    (tmp_path / "other.npz").write_bytes(b"")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelFileError, match="not a terrain-sentiment-linear"):
        load_model(tmp_path / "other.npz")


# --- sentiment_from_proba --------------------------------------------------------------------------------


def test_sentiment_from_proba() -> None:
    s = sentiment_from_proba([0.7, 0.2, 0.1], "fr", "v", ["nul", "a", "b", "c", "d", "e"])
    assert s.label is SentimentLabel.negative
    assert s.score == pytest.approx(-0.6) and s.confidence == pytest.approx(0.7)
    assert s.drivers == ["nul", "a", "b", "c", "d"]
    assert sentiment_from_proba(np.array([0.1, 0.3, 0.6]), "en", "v").score == pytest.approx(0.5)


# --- the shipped model ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> FastScorer:
    return FastScorer()


def test_shipped_model_is_the_default_and_has_a_card(shipped: FastScorer) -> None:
    assert make_scorer("fast").model_version == shipped.model_version
    assert shipped.model_version.startswith("fast-")
    card = (DEFAULT_MODEL_PATH.parent / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "non-commercial" in card and shipped.model_version in card
    meta = json.loads(DEFAULT_MODEL_PATH.with_suffix(".json").read_text(encoding="utf-8"))
    assert meta["terms"] and meta["dev_scores"]


@pytest.mark.parametrize(
    ("text", "label"),
    [
        # The smoke test, a plain question. KNOWN FAILURE of fast-fr-en-1 and -2: they answer negative
        # (drivers "quelle", "?"): their French neutral examples are DEFT climate headlines, and questions
        # there are mostly rhetorical. Strict, so this turns red when a model gets it right.
        pytest.param("à quelle heure ouvre la boutique ?", "neutral",
                     marks=pytest.mark.xfail(strict=True, reason="fast-fr-en-2 scores this question negative")),
        ("Service client nul, commande jamais reçue 😡", "negative"),
        ("Merci beaucoup, super accueil en magasin ❤️", "positive"),
        ("c'est pas terrible du tout", "negative"),  # négation of a positive-looking word
        ("Worst airline ever, lost my bag again", "negative"),
        ("Thanks so much, the crew was amazing!", "positive"),
    ],
)
def test_shipped_model_smoke(shipped: FastScorer, text: str, label: str) -> None:
    (got,) = shipped.score_batch([ScoreInput(text)])
    assert got.label.value == label, (got.label, got.confidence, got.drivers)
    assert -1.0 <= got.score <= 1.0 and 0.0 <= got.confidence <= 1.0


def test_shipped_model_drivers_are_words(shipped: FastScorer) -> None:
    (got,) = shipped.score_batch([ScoreInput("Service client nul, commande jamais reçue", "fr")])
    assert got.drivers and len(got.drivers) <= 5
    assert "nul" in got.drivers


def test_shipped_model_drivers_read_as_words(shipped: FastScorer) -> None:
    got = shipped.score_batch([ScoreInput("commande jamais reçue 😡 ?", "fr"), ScoreInput("c pas terrible", "fr")])
    assert got[0].drivers and got[1].drivers
    for driver in got[0].drivers + got[1].drivers:
        assert driver not in ("?", ",", "pas 😡")  # no bare punctuation, no negated emoji
        assert driver.count("pas") <= 1


def test_evaluation_report() -> None:
    report = evaluate(["negative", "negative", "positive", "neutral"], ["negative", "positive", "positive", "neutral"])
    assert report.accuracy == pytest.approx(0.75)
    assert report.recall("negative") == pytest.approx(0.5)
    assert report.per_class["positive"].precision == pytest.approx(0.5)
    assert report.macro_f1 == pytest.approx(np.mean([2 / 3, 2 / 3, 1.0]))
    assert report.confusion.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 1]]
    assert "macro-F1=" in report.text()
