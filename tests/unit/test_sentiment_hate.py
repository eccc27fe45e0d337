"""The identity-hate flag: the shipped model, the slur list, how the flag travels on the topic, and the setting
that turns the learned models off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.sentiment import charter
from services.sentiment.hostility import HostilityModel
from terrain.contracts import CharterFlag

SMOKE = Path(__file__).parents[2] / "bench" / "data" / "brand_smoke.jsonl"
HATEFUL = ["les arabes dehors, rentrez chez vous", "les femmes à la cuisine", "sale juif"]
# Ordinary brand-page comments, angry ones included: none is identity hate.
BRAND = [
    "Service déplorable, je suis très déçu", "Livraison en retard encore une fois, c'est nul",
    "Le burger était froid et le serveur désagréable", "Plus jamais chez vous, arnaque totale",
    "Je suis furieux, remboursez-moi", "Le gérant est incompétent", "Merci pour l'accueil !",
    "Terrible service, I am furious!",
    *(json.loads(line)["text"] for line in SMOKE.read_text(encoding="utf-8").splitlines() if line.strip()),
]


@pytest.fixture(scope="module")
def shipped() -> HostilityModel:
    model = charter.packaged_hate()
    assert model is not None, "the identity-hate model files are missing from services/sentiment/models"
    return model


@pytest.mark.parametrize("text", HATEFUL)
def test_identity_hate_is_flagged_as_a_violation(shipped: HostilityModel, text: str):
    flag = charter.hate(text, model=shipped)
    assert flag is not None and flag.kind == "hate" and flag.confidence >= charter.VIOLATION, text


def _hate_violation(text: str) -> bool:
    return any(f.kind == "hate" and f.confidence >= charter.VIOLATION for f in charter.flags_for(text))


def test_brand_comments_raise_no_hate_flag(shipped: HostilityModel):
    assert [t for t in BRAND if _hate_violation(t)] == []


@pytest.mark.parametrize("text", ["Les musulmans sont bienvenus à notre soirée",
                                  "Quels sont vos horaires pendant les fêtes ?"])
def test_the_model_alone_on_a_friendly_comment_is_a_review_hint_not_a_violation(shipped: HostilityModel, text: str):
    # The identity-hate model scores these past its cut-off (it keys on the mention of a group, or on a word);
    # the hostility model does not find them hostile, so the flag stays below the violation line.
    assert shipped.probability(text) >= shipped.threshold
    flag = charter.hate(text, model=shipped)
    assert flag is not None and flag.confidence == charter.HATE_UNCONFIRMED_CONFIDENCE
    assert flag.evidence is not None and "(not hostile)" in flag.evidence


def test_a_slur_is_hate_even_without_the_model():
    flag = charter.hate("sale bougnoule", model=None)
    assert flag is not None and flag.confidence == charter.HATE_SLUR_CONFIDENCE


def test_rules_only_setting_uses_no_model():
    assert charter.charter_models(False) == charter.RULES_ONLY
    assert [f.kind for f in charter.flags_with(charter.RULES_ONLY, "les femmes à la cuisine")] == []


def test_the_topic_carries_hate_as_an_insult_flag_that_says_so():
    hate = charter.Flag(kind="hate", confidence=0.8, evidence="hate model 0.95: arabes")
    insult = charter.Flag(kind="insult", confidence=0.6, evidence="connard")
    spam = charter.Flag(kind="spam", confidence=0.7, evidence="link")
    [alone] = charter.to_contract([hate])
    assert (alone.kind, alone.confidence, alone.evidence) == ("insult", 0.8, "hate: hate model 0.95: arabes")
    assert alone.category == "identity_hate"
    merged = charter.to_contract([insult, hate, spam])
    assert [f.kind for f in merged] == ["insult", "spam"]
    assert merged[0].confidence == 0.8 and merged[0].evidence == "hate: hate model 0.95: arabes; connard"
    assert merged[0].category == "identity_hate" and merged[1].category is None
    # A hate hint below a surer insult: the confidence is the insult's, so no hate category.
    hint = charter.Flag(kind="hate", confidence=0.45, evidence="hate model 0.81 (not hostile)")
    [weak] = charter.to_contract([insult, hint])
    assert weak.confidence == 0.6 and weak.category is None
    assert [f.category for f in charter.to_contract([insult])] == [None]
    # The field is optional: a flag from a producer that does not know it reads as before.
    assert CharterFlag.model_validate({"kind": "insult", "confidence": 0.6}).category is None


def test_shipped_card_names_data_terms_cutoff_and_dev_scores(shipped: HostilityModel):
    card = shipped.card
    assert set(card["data"]) == {"train_fr_hate", "train_fr", "train_en"}
    assert card["data"]["train_fr_hate"]["dropped_dev_overlap"] > 0  # texts also in a dev file were dropped
    assert "research" in card["terms"]
    assert shipped.threshold == card["threshold"]
    measured = card["scores"]["dev_fr_hate"]["combined"]
    assert 0 < measured["precision"] <= 1 and 0 < measured["recall"] <= 1
