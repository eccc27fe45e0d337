"""What every sentiment scorer shares: the input, the interface, the class order and the output built from
class probabilities. Pure; imports nothing heavier than numpy."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from terrain.contracts import Sentiment, SentimentLabel

CLASSES: tuple[str, str, str] = ("negative", "neutral", "positive")
NEGATIVE = 0
MAX_DRIVERS = 5
# Where the shipped model files and the static word table live.
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


class ScoreInput(NamedTuple):
    """A text to score, its language when known (ISO 639-1, else None to detect it), and its reach (likes +
    replies + shares: the cascade scorer sends far-reaching comments to its accurate tier)."""

    text: str
    lang: str | None = None
    reach: int = 0


class SentimentScorer(Protocol):
    """What the service needs from a scorer."""

    model_version: str

    def score_batch(self, items: Sequence[ScoreInput]) -> list[Sentiment]:
        """One Sentiment per input, in order. Deterministic, and each item's result depends on that item only
        (never on the rest of its batch): a redelivery must publish the same content under the same id."""
        ...


class ProbaModel(Protocol):
    """A model giving class probabilities in CLASSES order; what the cascade combines."""

    model_version: str

    @property
    def classes(self) -> tuple[str, ...]:
        """CLASSES: the column order of predict_proba (read-only, so a tuple constant satisfies it)."""
        ...

    def predict_proba(self, items: Sequence[ScoreInput]) -> np.ndarray:
        """(n, 3) probabilities, rows summing to 1, columns in CLASSES order."""
        ...


def sentiment_from_proba(
    proba_row: Sequence[float] | np.ndarray, lang: str, model_version: str, drivers: Sequence[str] = ()
) -> Sentiment:
    """A Sentiment from one row of class probabilities (CLASSES order): label = argmax, score = P(positive) −
    P(negative), confidence = the label's (calibrated) probability."""
    # Plain floats: numpy's argmax and clip on a 3-vector cost more than the arithmetic, once per comment.
    row = [float(p) for p in proba_row]
    best = max(range(len(row)), key=row.__getitem__)  # the first of equal maxima, as argmax
    score = min(1.0, max(-1.0, row[2] - row[0]))
    return Sentiment(
        label=SentimentLabel(CLASSES[best]),
        score=round(score, 4),
        confidence=round(min(1.0, max(0.0, row[best])), 4),
        lang=lang,
        model_version=model_version,
        drivers=list(drivers)[:MAX_DRIVERS],
    )


def save_arrays_and_card(stem: Path | str, arrays: dict[str, Any], card: dict[str, Any]) -> tuple[Path, Path]:
    """Write `<stem>.npz` (plain arrays: loading them with allow_pickle=False runs no code) and `<stem>.json`."""
    stem = Path(stem)
    npz, card_path = stem.with_suffix(".npz"), stem.with_suffix(".json")
    np.savez_compressed(npz, **arrays)
    card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return npz, card_path
