"""The hostility model: features, a tiny trained model, storage without pickle, and how it joins the insult rules."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import pytest

from services.sentiment import charter, hostility
from services.sentiment.hostility import HostilityModel
from services.sentiment.training.hostility import fit

HOSTILE = ["sale con", "bande de connards de merde", "t'es qu'un gros mongol", "ferme ta gueule sale rat",
           "espèce de gros porc", "retourne dans ton pays sale rat", "gros porc de merde", "t'es un rat"]
CALM = ["merci pour l'accueil", "à quelle heure ouvre la boutique", "service déplorable, très déçu",
        "le plat était froid", "super soirée merci", "livraison en retard", "très bon accueil", "prix trop élevés"]


@pytest.fixture(scope="module")
def tiny() -> HostilityModel:
    # Each text three times so that min_df keeps its n-grams; seconds to fit.
    texts, labels = (HOSTILE + CALM) * 3, ([1] * len(HOSTILE) + [0] * len(CALM)) * 3
    return fit(texts, labels, c=4.0, threshold=0.6, version="hostility-test")


def test_normalise_folds_case_accents_mentions_links_and_stretching():
    words, pairs = hostility.tokens_of("@bob CONNNNNARD, allez sur https://x.io — Déçu !! Déçu")
    assert words == ("connard", "allez", "sur", "decu", "!")
    assert pairs[:2] == ("b:connard allez", "b:allez sur") and pairs.count("b:decu !") == 1


def test_features_count_each_distinct_word_and_pair_once():
    counts = hostility.features("le les le")
    assert counts["w:le"] == 1 and counts["b:le les"] == 1 and counts["b:les le"] == 1
    assert counts["c: le"] == 2  # shared by the distinct words "le" and "les"
    assert hostility.features("") == {}


def test_probability_is_the_logistic_of_the_scaled_dot_product(tiny: HostilityModel):
    for text in ("sale con", "Merci pour l'accueil !", "le les le", "qwerty", ""):
        counts = hostility.features(text)
        total = sum(counts.values())
        z = tiny.bias + (sum(tiny.weights.get(f, 0.0) * n for f, n in counts.items()) / math.sqrt(total)
                         if total else 0.0)
        assert tiny.probability(text) == pytest.approx(1 / (1 + math.exp(-z)))


def test_a_tiny_model_separates_what_it_was_shown(tiny: HostilityModel):
    assert all(p > 0.5 for p in tiny.probabilities(HOSTILE))
    assert all(p < 0.5 for p in tiny.probabilities(CALM))
    assert "rat" in tiny.drivers("sale rat")


def test_save_and_load_without_pickle(tiny: HostilityModel, tmp_path: Path):
    weights_path, card_path = hostility.save(tiny, tmp_path, "hostility-test")
    with zipfile.ZipFile(weights_path) as npz:
        assert sorted(npz.namelist()) == ["bias.npy", "terms.npy", "weights.npy"]
    assert json.loads(card_path.read_text())["threshold"] == 0.6
    back = hostility.load(tmp_path, "hostility-test")  # np.load(allow_pickle=False) inside
    assert back.threshold == 0.6 and back.version == "hostility-test"
    for text in HOSTILE + CALM:
        assert back.probability(text) == pytest.approx(tiny.probability(text), abs=1e-6)  # float32 weights


def test_model_confidence_puts_the_cutoff_on_the_violation_line():
    assert charter.model_confidence(0.8, 0.8) == 0.5
    assert charter.model_confidence(1.0, 0.8) == charter.MODEL_MAX_CONFIDENCE
    assert charter.model_confidence(0.79, 0.8) < 0.5
    assert charter.model_confidence(0.0, 0.8) == 0.0


class Fixed(HostilityModel):
    """A model that answers one probability whatever the text: isolates how the flag combines them."""

    def __init__(self, p: float, threshold: float = 0.8) -> None:
        super().__init__({}, 0.0, threshold, "fixed")
        object.__setattr__(self, "p", p)

    def probability(self, text: str) -> float:
        return self.p  # type: ignore[attr-defined, no-any-return]


@pytest.mark.parametrize(
    ("text", "p", "confidence"),
    [
        ("Bande de connards", 0.1, 0.9),  # a vulgar insult stands whatever the model says
        ("Bande de connards", 1.0, 0.9),  # and the model alone (0.85 at most) never outranks it
        ("T'es débile ou quoi", 0.1, 0.75),  # a mild word said to someone stands
        ("T'es débile ou quoi", 1.0, 0.85),  # the model can only raise it
        ("C'est débile cette règle", 0.3, 0.4),  # a mild word alone: informational
        ("C'est débile cette règle", 0.6, 0.6),  # the model leans hostile: now a violation
        ("retourne dans ton pays", 0.9, 0.675),  # no word list hit: the model alone, past its cut-off
    ],
)
def test_rules_and_model_combine(text: str, p: float, confidence: float):
    flag = charter.insult(text, hostility=Fixed(p))
    assert flag is not None and flag.confidence == confidence


def test_the_model_alone_flags_only_past_its_cutoff_and_says_why(tiny: HostilityModel):
    assert charter.insult("retourne dans ton pays", hostility=Fixed(0.79)) is None
    flag = charter.insult("retourne dans ton pays sale rat", hostility=tiny)
    assert flag is not None and flag.evidence is not None and flag.evidence.startswith("hostility model ")
    assert "rat" in flag.evidence
    assert charter.insult("retourne dans ton pays sale rat", hostility=None) is None  # rules only


# --- the shipped model ---------------------------------------------------------------------------------

# Ordinary brand-page comments, several of them angry: negative is not an insult, none may be flagged.
BENIGN = [
    "Service déplorable", "service déplorable, je suis très déçu", "Livraison en retard encore une fois, c'est nul",
    "à quelle heure ouvre la boutique ?", "Le burger était froid et le serveur désagréable",
    "Plus jamais chez vous, arnaque totale", "Je suis furieux, remboursez-moi", "vos prix sont scandaleux",
    "C'est inadmissible, trois semaines sans réponse", "Le gérant est incompétent", "Les toilettes étaient sales",
    "Trop cher pour ce que c'est", "Je ne reviendrai pas, les frites étaient immondes", "Merci pour l'accueil !",
    "Franchement la pire expérience de ma vie dans un resto", "Terrible service, I am furious!",
]
# Hostile comments no word list catches.
HOSTILE_UNLISTED = ["t'es qu'un gros mongol", "les arabes dehors", "retourne dans ton pays"]


@pytest.fixture(scope="module")
def shipped() -> HostilityModel:
    model = charter.packaged_hostility()
    assert model is not None, "the hostility model files are missing from services/sentiment/models"
    return model


@pytest.mark.parametrize("text", BENIGN)
def test_shipped_model_leaves_ordinary_complaints_unflagged(shipped: HostilityModel, text: str):
    assert "insult" not in {f.kind for f in charter.flags_for(text)}


@pytest.mark.parametrize("text", HOSTILE_UNLISTED)
def test_shipped_model_finds_hostility_the_rules_miss(shipped: HostilityModel, text: str):
    assert charter.insult(text, hostility=None) is None
    flag = charter.insult(text)
    assert flag is not None and flag.confidence >= charter.VIOLATION


def test_shipped_model_card_names_data_terms_and_scores(shipped: HostilityModel):
    card = shipped.card
    assert set(card["data"]) == {"train_fr_hostile", "train_fr_hate", "train_fr"}
    assert "non-commercial" in card["terms"]
    combined = card["scores"]["dev_fr_hostile"]["combined"]
    rules = card["scores"]["dev_fr_hostile"]["rules"]
    assert combined["recall"] > rules["recall"] and 0 < combined["precision"] <= 1
    assert shipped.threshold == card["threshold"]
