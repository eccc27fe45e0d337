"""Corrections: request validation, and stored corrections to the trainer's labelled JSON lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.sentiment.corrections import CorrectionIn, corrections_to_training_rows, training_row
from terrain.contracts import SentimentLabel

T0 = datetime(2026, 11, 25, 10, tzinfo=UTC)


def stored(i: int, text: str, label: str, lang: str | None = "fr", minutes: int = 0) -> dict[str, object]:
    return {"id": i, "comment_id": None, "text": text, "lang": lang, "label": label, "previous_label": None,
            "previous_model_version": None, "corrected_by": None, "note": None,
            "created_at": T0 + timedelta(minutes=minutes)}


def test_a_correction_needs_a_known_label_and_a_text():
    ok = CorrectionIn.model_validate({"text": "Service déplorable", "label": "negative", "previous_label": "neutral"})
    assert ok.label is SentimentLabel.negative and ok.comment_id is None and ok.lang is None
    with pytest.raises(ValidationError) as bad:
        CorrectionIn.model_validate({"text": "x", "label": "angry"})
    assert [e["loc"] for e in bad.value.errors()] == [("label",)]
    with pytest.raises(ValidationError) as empty:
        CorrectionIn.model_validate({"text": "", "label": "neutral"})
    assert [e["loc"] for e in empty.value.errors()] == [("text",)]
    with pytest.raises(ValidationError):
        CorrectionIn.model_validate({"text": "x", "label": "neutral", "lang": "French"})


def test_training_rows_keep_the_latest_label_of_each_text_oldest_first():
    rows = [
        stored(3, "Top, merci !", "positive", minutes=5),
        stored(1, "Service déplorable", "neutral", minutes=1),
        stored(2, "à quelle heure ouvre la boutique ?", "neutral", lang=None, minutes=2),
        stored(4, "Service déplorable", "negative", minutes=9),  # corrected again later: this label wins
    ]
    assert corrections_to_training_rows(rows) == [
        {"text": "à quelle heure ouvre la boutique ?", "label": "neutral", "lang": None},
        {"text": "Top, merci !", "label": "positive", "lang": "fr"},
        {"text": "Service déplorable", "label": "negative", "lang": "fr"},  # at the place of its latest label
    ]
    assert corrections_to_training_rows([]) == []


def test_same_time_corrections_are_ordered_by_id():
    rows = [stored(2, "pas mal", "positive"), stored(1, "pas mal", "neutral")]
    assert corrections_to_training_rows(rows) == [{"text": "pas mal", "label": "positive", "lang": "fr"}]


def test_training_rows_are_what_the_trainer_reads(tmp_path: Path):
    from services.sentiment.cli import read_labelled  # the `terrain sentiment train --data FILE` reader

    rows = corrections_to_training_rows([stored(1, "Nul", "negative"), stored(2, "Bof", "neutral", lang=None)])
    path = tmp_path / "corrections.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    read = read_labelled(path)
    assert [(r["text"], r["label"], r["lang"]) for r in read] == [("Nul", "negative", "fr"), ("Bof", "neutral", None)]


def test_training_row_accepts_the_enum_or_its_value():
    assert training_row({"text": "a", "label": SentimentLabel.positive, "lang": "en"}) == training_row(
        {"text": "a", "label": "positive", "lang": "en"})
