"""A small learned hostility classifier (word + character n-grams, logistic regression) for the insult flag.

Why a vocabulary and not a hashing trick at run time: the model keeps only the n-grams it learned a weight
for, so scoring a text is a few hundred dictionary look-ups (no hash function to reproduce, no collisions)
and the n-grams that weigh most are the evidence a reviewer reads. The weights live in a `.npz` file (no
pickle) beside a JSON card that names the data, its terms and the measured scores.

The same model shape serves two charter flags: the insult flag's hostility model and the hate flag's
identity-hate model, each with its own files and cut-off.

Pure: loading reads a file, scoring does no I/O. Training (scikit-learn) lives in
`services.sentiment.training.hostility` (`python -m services.sentiment.training.hostility train`), never in
the service.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MODELS_DIR = Path(__file__).parent / "models"
DEFAULT_MODEL = "hostility-fr-v1"
HATE_MODEL = "hate-fr-v1"

_MENTION = re.compile(r"@\w+")
_URL = re.compile(r"https?://\S+|www\.\S+|\blink\b|@url\b")
_STRETCH = re.compile(r"(\w)\1{2,}")
_TOKEN = re.compile(r"[a-z0-9]+|[!?]")
CHAR_SIZES = (3, 4, 5)
WORD_CACHE_SIZE = 200_000


def normalise(text: str) -> str:
    """Lower case, accents folded, mentions and links replaced by a placeholder, stretched letters cut to two.

    The placeholders keep "@user @user" tweets and "LINK" reviews from teaching the model that a mention or
    a link is hostile: both datasets replace them differently, and brand comments rarely have them.
    """
    folded = text.replace("’", "'").replace("`", "'")
    folded = _URL.sub(" ", _MENTION.sub(" ", folded))
    if not folded.isascii():
        folded = unicodedata.normalize("NFKD", folded).encode("ascii", "ignore").decode("ascii")
    return _STRETCH.sub(r"\1\1", folded.lower())


def word_features(token: str) -> tuple[str, ...]:
    """A word's features: the word itself (`w:`) and its character 3-5-grams, padded with spaces (`c:`)."""
    padded = f" {token} "
    grams = {"c:" + padded[i:i + n] for n in CHAR_SIZES for i in range(len(padded) - n + 1)}
    return ("w:" + token, *sorted(grams))


@functools.lru_cache(maxsize=4096)
def tokens_of(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The distinct words of a text and its distinct word pairs (`b:`), in order of first appearance.

    Cached (bounded): the charter reads the same text with the hostility and the hate models, and the hate
    flag asks the hostility model again.
    """
    tokens = _TOKEN.findall(normalise(text))
    pairs = [f"b:{a} {b}" for a, b in itertools.pairwise(tokens)]
    return tuple(dict.fromkeys(tokens)), tuple(dict.fromkeys(pairs))


def features(text: str) -> dict[str, int]:
    """Feature counts: each distinct word adds its own features (so "le" and "les" both count " le"), each
    distinct word pair adds one. Scoring sums per-word totals it caches, which is why a character n-gram
    shared by two different words counts twice rather than once."""
    words, pairs = tokens_of(text)
    out: dict[str, int] = dict.fromkeys(pairs, 1)
    for word in words:
        for f in word_features(word):
            out[f] = out.get(f, 0) + 1
    return out


def _display(term: str) -> str:
    return term[2:].strip()


@dataclass(frozen=True)
class HostilityModel:
    """Logistic regression over L2-normalised binary n-gram features; `threshold` is the flagging cut-off."""

    weights: dict[str, float]
    bias: float
    threshold: float
    version: str
    card: dict[str, Any] = field(default_factory=dict)
    # Words repeat across comments: each word's summed weight is computed once (bounded, per model).
    _words: dict[str, tuple[float, int]] = field(default_factory=dict, repr=False, compare=False)

    def probability(self, text: str) -> float:
        """Logistic of w·x + b, with x the feature counts divided by the square root of their total."""
        words, pairs = tokens_of(text)
        w, cache = self.weights, self._words
        total, z = len(pairs), 0.0
        for p in pairs:
            z += w.get(p, 0.0)
        for word in words:
            known = cache.get(word)
            if known is None:
                feats = word_features(word)
                known = (sum(w.get(f, 0.0) for f in feats), len(feats))
                if len(cache) < WORD_CACHE_SIZE:
                    cache[word] = known
            z += known[0]
            total += known[1]
        z = z / math.sqrt(total) + self.bias if total else self.bias
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def probabilities(self, texts: Iterable[str]) -> list[float]:
        return [self.probability(t) for t in texts]

    def drivers(self, text: str, k: int = 3) -> list[str]:
        """The words (or word pairs) that pushed most towards hostile; character n-grams are summed into
        the word they come from, so a reviewer reads "mongol", not "ngol"."""
        w = self.weights
        tokens = _TOKEN.findall(normalise(text))
        scored: dict[str, float] = {}
        for t in tokens:
            scored[t] = sum(w.get(f, 0.0) for f in word_features(t))
        for a, b in itertools.pairwise(tokens):
            pair = f"{a} {b}"
            bonus = w.get("b:" + pair, 0.0)
            if bonus > 0:
                scored[pair] = bonus + max(scored.get(a, 0.0), scored.get(b, 0.0))
        ranked = sorted((s, t) for t, s in scored.items() if s > 0 and len(t) > 1)
        return [t for _, t in reversed(ranked[-k:])]


def save(model: HostilityModel, directory: Path, name: str) -> tuple[Path, Path]:
    """Write `<name>.npz` (terms and weights) and `<name>.json` (the card: data, terms, scores, threshold)."""
    directory.mkdir(parents=True, exist_ok=True)
    terms = sorted(model.weights)
    weights_path, card_path = directory / f"{name}.npz", directory / f"{name}.json"
    np.savez_compressed(
        weights_path,
        terms=np.array(terms, dtype=np.str_),
        weights=np.array([model.weights[t] for t in terms], dtype=np.float32),
        bias=np.array([model.bias], dtype=np.float64),
    )
    card = dict(model.card, version=model.version, threshold=model.threshold, n_terms=len(terms))
    card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return weights_path, card_path


def load(directory: Path = MODELS_DIR, name: str = DEFAULT_MODEL) -> HostilityModel:
    card = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
    with np.load(directory / f"{name}.npz", allow_pickle=False) as data:
        terms = data["terms"].tolist()
        weights = dict(zip(terms, data["weights"].astype(float).tolist(), strict=True))
        bias = float(data["bias"][0])
    return HostilityModel(weights, bias, float(card["threshold"]), str(card["version"]), card)
