"""Static word vectors: the table, the text vectors, and the fast tier's second head built on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.sentiment.scorers.base import CLASSES, ScoreInput
from services.sentiment.scorers.fast import FastScorer, FeatureConfig, ModelFileError, load_model, save_model
from services.sentiment.scorers.static import StaticTable, load_table, sif_weights, word_key, word_keys
from services.sentiment.training.fast import train_fast

TINY_CONFIG = FeatureConfig(word_bits=12, char_bits=12)


def test_word_keys_are_the_featurisers_unigrams() -> None:
    assert word_key("bon") == "bon"
    assert word_key("NEG_content") == "content"  # the negation mark is the hashed model's business
    assert word_key("trooooop") == "troop"  # three repeats or more cut to two, as the table was built
    assert word_key("pas NEG_bon") is None and word_key("_lang_fr_") is None
    assert word_keys(["c'", "est", "pas", "NEG_bon", "pas NEG_bon", "_lang_fr_"]) == ["c'", "est", "pas", "bon"]


def random_table(words: list[str], dim: int = 8, seed: int = 0) -> StaticTable:
    vectors = np.random.default_rng(seed).normal(size=(len(words), dim)).astype(np.float32)
    return StaticTable.from_vectors(words, vectors, list(range(len(words), 0, -1)), {"version": "test"})


def test_quantised_rows_stay_close_to_the_vectors() -> None:
    vectors = np.random.default_rng(1).normal(size=(50, 16)).astype(np.float32)
    table = StaticTable.from_vectors([f"w{i}" for i in range(50)], vectors, [1] * 50)
    restored = table.codes.astype(np.float32) * table.scales[:, None]
    # int8 with a scale per row: the error is at most half a step, 1/254 of the row's largest value.
    assert np.all(np.abs(restored - vectors) <= np.abs(vectors).max(axis=1, keepdims=True) / 254 + 1e-7)


def test_sif_weights_favour_rare_words() -> None:
    w = sif_weights([1000, 10, 1])
    assert w[0] < w[1] < w[2] <= 1.0


def test_a_text_vector_is_the_normalised_weighted_sum_of_its_known_words() -> None:
    words = ["merci", "super", "nul", "de"]
    table = random_table(words)
    rows = table.codes.astype(np.float32) * table.scales[:, None] * table.weights[:, None]
    expected = rows[1] + rows[3] + rows[1]
    got = table.embed([["super", "de", "inconnu", "super"], [], ["inconnu"], ["nul"]])
    np.testing.assert_allclose(got[0], expected / np.linalg.norm(expected), rtol=1e-5)
    assert not got[1].any() and not got[2].any()  # nothing known: a zero vector, not NaN
    np.testing.assert_allclose(got[3], rows[2] / np.linalg.norm(rows[2]), rtol=1e-5)
    # Each text's vector depends on that text only, whatever batch it comes in.
    np.testing.assert_array_equal(table.embed([["nul"]])[0], got[3])


def test_table_file_round_trip_and_checks(tmp_path: Path) -> None:
    table = random_table(["a", "b", "c"])
    table.save(tmp_path / "t")
    loaded = StaticTable.load(tmp_path / "t")
    assert loaded.words == table.words and loaded.meta == {"version": "test"}
    np.testing.assert_array_equal(loaded.codes, table.codes)
    with np.load(tmp_path / "t.npz", allow_pickle=False) as z:  # plain arrays: nothing to unpickle
        assert set(z.files) == {"words", "codes", "scales", "weights"}
    card = json.loads((tmp_path / "t.json").read_text())
    card["dim"] = 9
    (tmp_path / "t.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="do not match"):
        StaticTable.load(tmp_path / "t")


def test_the_shipped_table_covers_everyday_words() -> None:
    table = load_table()
    assert table.dim == 384 and len(table.words) > 10_000
    for word in ("merci", "nul", "déçu", "thanks", "terrible", "!"):
        assert word in table.index, word
    # Words alike in meaning sit closer than words that are not.
    v = table.embed([["déçu"], ["décevant"], ["merci"]])
    assert v[0] @ v[1] > v[0] @ v[2]


# --- the fast tier's static head --------------------------------------------------------------------------


def tiny_rows() -> list[tuple[str, str]]:
    neg = ["nul", "horrible", "déçu", "arnaque", "honteux"]
    pos = ["merci", "super", "génial", "bravo", "parfait"]
    neu = ["horaires", "adresse", "ouverture", "question", "boutique"]
    rows = []
    for i in range(12):
        rows += [(f"{neg[i % 5]} service {neg[(i + 1) % 5]}", "negative"),
                 (f"{pos[i % 5]} équipe {pos[(i + 2) % 5]}", "positive"),
                 (f"{neu[i % 5]} de la {neu[(i + 3) % 5]} ?", "neutral")]
    return rows


@pytest.fixture(scope="module")
def tiny_table() -> StaticTable:
    words = sorted({w for text, _ in tiny_rows() for w in text.split()})
    return random_table(words, dim=16, seed=3)


def test_training_with_a_table_adds_a_head_averaged_with_the_hashed_model(tiny_table: StaticTable) -> None:
    rows = tiny_rows()
    model = train_fast([t for t, _ in rows], ["fr"] * len(rows), [lab for _, lab in rows], config=TINY_CONFIG,
                       static_table=("tiny", tiny_table), hashed_weight={"fr": 0.3, "en": 0.5})
    assert model.static is not None and model.static.table_name == "tiny"
    scorer = FastScorer(model=model)
    items = [ScoreInput("merci super équipe", "fr"), ScoreInput("nul service déçu", "en")]
    got = scorer.predict_proba(items)
    x = scorer.featurizer.transform([i.text for i in items], ["fr", "en"])
    docs = [scorer.featurizer.tokens(i.text, lang) for i, lang in zip(items, ["fr", "en"], strict=True)]
    hashed, static = model.proba(x), model.static.proba(docs, ["fr", "en"])
    np.testing.assert_allclose(got[0], 0.3 * hashed[0] + 0.7 * static[0])
    np.testing.assert_allclose(got[1], 0.5 * hashed[1] + 0.5 * static[1])
    assert [CLASSES[j] for j in got.argmax(axis=1)] == ["positive", "negative"]


def test_binary_data_trains_no_static_head_and_says_so(tiny_table: StaticTable) -> None:
    rows = [(t, lab) for t, lab in tiny_rows() if lab != "neutral"]
    model = train_fast([t for t, _ in rows], ["fr"] * len(rows), [lab for _, lab in rows], config=TINY_CONFIG,
                       static_table=("tiny", tiny_table))
    assert model.static is None
    assert "all three classes" in model.metadata["training"]["static_head"]


def test_model_file_keeps_the_static_head(tiny_table: StaticTable, tmp_path: Path) -> None:
    rows = tiny_rows()
    model = train_fast([t for t, _ in rows], ["fr"] * len(rows), [lab for _, lab in rows], config=TINY_CONFIG,
                       static_table=("tiny", tiny_table), metadata={"version": "fast-static-test"})
    tiny_table.save(tmp_path / "tiny")  # a table beside the model is found before the shipped ones
    path = save_model(model, tmp_path / "m")
    items = [ScoreInput(t, "fr") for t, _ in rows[:9]]
    np.testing.assert_allclose(FastScorer(path).predict_proba(items), FastScorer(model=model).predict_proba(items),
                               atol=2e-3)
    assert load_model(path).static is not None
    # A model naming a table that is nowhere fails with the reason, not later with a KeyError.
    other = tmp_path / "elsewhere"
    other.mkdir()
    for suffix in (".npz", ".json"):
        (other / f"m{suffix}").write_bytes(path.with_suffix(suffix).read_bytes())
    with pytest.raises(ModelFileError, match="static word table 'tiny' not found"):
        load_model(other / "m.npz")


def test_the_shipped_fast_model_has_its_static_head() -> None:
    scorer = FastScorer()
    assert scorer.model.static is not None
    assert scorer.model.static.table.dim == 384


def test_binary_sources_are_balanced_apart_and_weigh_less() -> None:
    from services.sentiment.training.fast import BINARY_SOURCE_WEIGHT, static_groups

    labels = ["negative", "positive", "neutral", "negative", "positive", "positive"]
    sources = ["tweets", "tweets", "tweets", "reviews", "reviews", "tweets-en"]
    langs = ["fr", "fr", "fr", "fr", "fr", "en"]
    groups, weights = static_groups(langs, labels, sources)
    # "reviews" never says neutral: its rows are a group of their own, so they cannot make "short" mean neutral.
    assert groups == ["fr:three-class"] * 3 + ["fr:binary"] * 2 + ["en:binary"]
    assert weights == {"fr:binary": BINARY_SOURCE_WEIGHT, "en:binary": BINARY_SOURCE_WEIGHT}
    assert static_groups(langs, labels, None)[0] == ["fr:three-class"] * 5 + ["en:three-class"]


def test_featuriser_tokens_reach_the_same_vector_as_their_word_keys() -> None:
    table = random_table(["c'", "est", "pas", "bon", "troop"])
    tokens = ["c'", "est", "pas", "NEG_bon", "pas NEG_bon", "trooooop", "_lang_fr_"]
    np.testing.assert_array_equal(table.embed_tokens([tokens, tokens]), table.embed([word_keys(tokens)] * 2))


def test_a_class_with_a_single_example_trains_a_static_head_without_a_temperature(tiny_table: StaticTable) -> None:
    # 169 rows and one neutral: the held-out fifth cannot be stratified; before, training failed with
    # scikit-learn's "The least populated classes in y have only 1 member".
    rows = [(t, lab) for t, lab in tiny_rows() if lab != "neutral"] * 7 + [("horaires de la boutique ?", "neutral")]
    assert len(rows) * 0.2 >= 30
    model = train_fast([t for t, _ in rows], ["fr"] * len(rows), [lab for _, lab in rows], config=TINY_CONFIG,
                       static_table=("tiny", tiny_table))
    assert model.static is not None and model.static.head.temperature == 1.0
    assert "single example" in model.static.head.meta["calibration"]


def test_too_few_rows_to_hold_out_leave_both_temperatures_at_one(tiny_table: StaticTable) -> None:
    # 108 rows: 16 held out for the hashed head, 21 for the static one, both under MIN_CALIBRATION_ROWS (30).
    # Fitted on so few, a temperature had come out at 0.2, the grid's edge, making every label near-certain.
    rows = tiny_rows() * 3
    model = train_fast([t for t, _ in rows], ["fr"] * len(rows), [lab for _, lab in rows], config=TINY_CONFIG,
                       static_table=("tiny", tiny_table))
    assert model.temperature == 1.0 and model.metadata["training"]["calibration_share"] == 0.0
    assert model.static is not None and model.static.head.temperature == 1.0
    bigger = tiny_rows() * 7  # 252 rows: 37 and 50 held out
    model = train_fast([t for t, _ in bigger], ["fr"] * len(bigger), [lab for _, lab in bigger],
                       config=TINY_CONFIG, static_table=("tiny", tiny_table))
    assert model.metadata["training"]["calibration_share"] == 0.15
    assert model.temperature != 1.0 and model.static is not None and model.static.head.temperature != 1.0


def test_sample_weights_reach_the_static_head(tiny_table: StaticTable) -> None:
    # The same rows, the negative ones weighted 20 times: the static head must lean further toward negative.
    rows = tiny_rows() * 7
    texts, labels = [t for t, _ in rows], [lab for _, lab in rows]
    plain = train_fast(texts, ["fr"] * len(rows), labels, config=TINY_CONFIG, static_table=("tiny", tiny_table))
    heavy = train_fast(texts, ["fr"] * len(rows), labels, config=TINY_CONFIG, static_table=("tiny", tiny_table),
                       sample_weight=[20.0 if lab == "negative" else 1.0 for lab in labels])
    assert plain.static is not None and heavy.static is not None
    probe = [(["horaires", "super"], "")]
    neg = CLASSES.index("negative")
    assert heavy.static.proba(probe, ["fr"])[0, neg] > plain.static.proba(probe, ["fr"])[0, neg]
