"""The FAST learned scorer: hashed word + char n-grams, a multinomial logistic regression, calibrated.

- `FastScorer(path=None)`: a ProbaModel and a SentimentScorer. `FastScorer.explain(items, proba)`: drivers
  toward each row's argmax of probabilities that may come from another model (the cascade's).
- Model file: `<name>.npz` (numeric arrays only, loaded with allow_pickle=False, so loading runs no code) and
  `<name>.json` beside it (version, date, feature config, training data and its terms, dev scores). The
  features are hashed as sklearn's HashingVectorizer hashes them (built here from per-word caches), so nothing
  but the config is stored for them; the coefficient matrix keeps only the hashed columns that training used
  (float16).
- Training lives in `services.sentiment.training.fast`; this module only loads and scores.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize as sk_normalize
from sklearn.utils import murmurhash3_32

from services.sentiment.calibration import softmax
from services.sentiment.scorers.accurate import LogisticHead
from services.sentiment.scorers.base import (
    CLASSES,
    MAX_DRIVERS,
    MODELS_DIR,
    ScoreInput,
    save_arrays_and_card,
    sentiment_from_proba,
)
from services.sentiment.scorers.language import language_of
from services.sentiment.scorers.static import StaticTable, load_table_at
from services.sentiment.textnorm import NEG_CUES, NEG_PREFIX, NormConfig, normalize, surface
from terrain.contracts import Sentiment

FORMAT = "terrain-sentiment-linear"
FORMAT_VERSION = 1
DEFAULT_MODEL_NAME = "fast-fr-en-2"
DEFAULT_MODEL_PATH = MODELS_DIR / f"{DEFAULT_MODEL_NAME}.npz"
# Texts longer than this are cut: the opening sets the tone, and char n-grams cost per character.
MAX_CHARS = 2_000
LANG_CHARS = 300


# --- features -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureConfig:
    """How texts become hashed features; stored in the model file (nothing else is needed to rebuild them)."""

    word_bits: int = 19  # 2**19 hashed columns for word uni/bigrams
    char_bits: int = 19  # and as many for character n-grams
    word_ngrams: int = 2  # 1 = words, 2 = words + bigrams
    char_ngram_min: int = 3  # 2-grams cost 35% more time for no measurable gain
    char_ngram_max: int = 5  # 0 disables character n-grams
    char_weight: float = 1.0  # the char block's weight relative to the word block (each is L2-normalised)
    char_chars: int = 400  # char n-grams see only the opening: they cost per character
    lang_feature: bool = True
    norm: NormConfig = field(default_factory=NormConfig)

    def to_json(self) -> dict[str, Any]:
        return {
            "word_bits": self.word_bits, "char_bits": self.char_bits, "word_ngrams": self.word_ngrams,
            "char_ngram_min": self.char_ngram_min, "char_ngram_max": self.char_ngram_max,
            "char_weight": self.char_weight, "char_chars": self.char_chars, "lang_feature": self.lang_feature,
            "norm": self.norm.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureConfig:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "norm"}
        return cls(**fields, norm=NormConfig.from_json(data.get("norm", {})))

    @property
    def n_features(self) -> int:
        return (1 << self.word_bits) + ((1 << self.char_bits) if self.char_ngram_max else 0)


def lang_token(lang: str) -> str:
    return f"_lang_{lang if lang in ('fr', 'en') else 'other'}_"


def word_features(words: list[str], n: int) -> list[str]:
    """Unigrams and, when n >= 2, adjacent bigrams joined by a space."""
    if n < 2:
        return words
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


def hashed_column(token: str, n: int) -> int:
    """The column HashingVectorizer (no alternate sign) gives a feature: |murmurhash3_32| mod n, with its rule
    for the one hash whose absolute value does not fit."""
    h = murmurhash3_32(token, seed=0, positive=False)
    return (2147483647 - (n - 1)) % n if h == -2147483648 else abs(h) % n


def char_wb_ngrams(word: str, lo: int, hi: int) -> list[str]:
    """One word's character n-grams as HashingVectorizer's `char_wb` analyzer makes them: the word padded with
    a space each side, every n-gram of each length; a padded word no longer than n is counted once."""
    padded = f" {word} "
    size = len(padded)
    out: list[str] = []
    for n in range(lo, hi + 1):
        if size <= n:
            out.append(padded[:n])
            break
        out.extend(padded[i:i + n] for i in range(size - n + 1))
    return out


class Featurizer:
    """Texts and languages to a sparse matrix, from a FeatureConfig alone (its caches change the speed only).

    The matrix is the one sklearn's HashingVectorizer builds (word block, then char_wb block, each row of each
    block L2-normalised; a test compares them), built from per-token caches: words repeat from comment to
    comment, so each word's column and each word's char n-gram columns are hashed once, not once per use.
    """

    # Entries per cache; a long-running service sees endless new words, so a full cache starts again. A word's
    # char n-gram columns take ~250 bytes with their key: 100,000 words are ~25 MB.
    WORD_CACHE_LIMIT = 500_000
    CHAR_CACHE_LIMIT = 100_000

    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        self._column_cache: dict[str, int] = {}
        self._char_cache: dict[str, np.ndarray] = {}

    def tokens(self, text: str, lang: str) -> tuple[list[str], str]:
        norm = normalize(text[:MAX_CHARS], self.config.norm)
        words = word_features(norm.words, self.config.word_ngrams)
        if self.config.lang_feature:
            words.append(lang_token(lang))
        return words, norm.chars[:self.config.char_chars]

    def transform(self, texts: Sequence[str], langs: Sequence[str]) -> sp.csr_matrix:
        docs = [self.tokens(t, lang) for t, lang in zip(texts, langs, strict=True)]
        return self.transform_tokens(docs)

    def transform_tokens(self, docs: Sequence[tuple[list[str], str]]) -> sp.csr_matrix:
        column = self.column_of
        word_columns = np.fromiter((column(t) for d in docs for t in d[0]), dtype=np.int32)
        words = _block(word_columns, [len(d[0]) for d in docs], 1 << self.config.word_bits)
        if not self.config.char_ngram_max:
            return words
        char_columns = self._char_columns
        parts: list[np.ndarray] = []
        lengths: list[int] = []
        for _, text in docs:
            n = 0
            for w in text.split():
                cols = char_columns(w)
                parts.append(cols)
                n += len(cols)
            lengths.append(n)
        indices = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
        chars = _block(indices, lengths, 1 << self.config.char_bits)
        if self.config.char_weight != 1.0:
            chars = chars * self.config.char_weight
        return sp.hstack([words, chars], format="csr")

    def column_of(self, token: str) -> int:
        """The word-block column a word feature hashes to (as HashingVectorizer computes it)."""
        col = self._column_cache.get(token)
        if col is None:
            col = hashed_column(token, 1 << self.config.word_bits)
            if len(self._column_cache) >= self.WORD_CACHE_LIMIT:
                self._column_cache.clear()
            self._column_cache[token] = col
        return col

    def _char_columns(self, word: str) -> np.ndarray:
        cols = self._char_cache.get(word)
        if cols is None:
            c = self.config
            grams = char_wb_ngrams(word, c.char_ngram_min, c.char_ngram_max)
            cols = np.fromiter((hashed_column(g, 1 << c.char_bits) for g in grams), dtype=np.int32, count=len(grams))
            if len(self._char_cache) >= self.CHAR_CACHE_LIMIT:
                self._char_cache.clear()
            self._char_cache[word] = cols
        return cols


def _block(indices: np.ndarray, lengths: Sequence[int], n_features: int) -> sp.csr_matrix:
    """Rows of hashed columns (row i holds the next lengths[i] of `indices`) as counts, each row L2-normalised,
    as float64 CSR: what HashingVectorizer makes of the same features."""
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    m = sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(len(lengths), n_features))
    m.sum_duplicates()
    return sk_normalize(m, norm="l2", copy=False)


# --- the model ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StaticPart:
    """A second head, on static word vectors (see `scorers.static`), averaged with the hashed model's
    probabilities: p = w·hashed + (1 − w)·static, w per language bucket (fr, en, other)."""

    table_name: str
    table: StaticTable
    head: LogisticHead
    hashed_weight: dict[str, float]

    def weights_for(self, langs: Sequence[str]) -> np.ndarray:
        default = self.hashed_weight.get("other", 0.5)
        return np.array([self.hashed_weight.get(lang, default) for lang in langs], dtype=np.float64)[:, None]

    def proba(self, docs: Sequence[tuple[list[str], str]], langs: Sequence[str]) -> np.ndarray:
        return self.head.predict_proba(self.table.embed_tokens([words for words, _ in docs]), langs)

    def to_json(self) -> dict[str, Any]:
        return {"table": self.table_name, "temperature": self.head.temperature, "use_lang": self.head.use_lang,
                "hashed_weight": dict(self.hashed_weight), **self.head.meta}


@dataclass
class LinearModel:
    """A multinomial linear model over hashed features, with temperature calibration, and optionally a static
    word-vector head averaged with it."""

    config: FeatureConfig
    columns: np.ndarray  # (k,) int32: the feature columns with any non-zero weight
    weights: np.ndarray  # (k, 3) float32
    intercept: np.ndarray  # (3,) float32
    temperature: float = 1.0
    metadata: dict[str, Any] = field(default_factory=dict)
    static: StaticPart | None = None

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "fast-unversioned"))

    @functools.cached_property
    def dense_weights(self) -> np.ndarray:
        """(n_features, 3) float32; 12 MB for 2**20 features, and a sparse × dense product is fast."""
        full = np.zeros((self.config.n_features, len(CLASSES)), dtype=np.float32)
        full[self.columns] = self.weights
        return full

    def logits(self, x: sp.csr_matrix) -> np.ndarray:
        out: np.ndarray = np.asarray(x @ self.dense_weights) + self.intercept
        return out

    def proba(self, x: sp.csr_matrix) -> np.ndarray:
        """The hashed model's probabilities alone."""
        return softmax(self.logits(x) / self.temperature)

    def predict(self, x: sp.csr_matrix, docs: Sequence[tuple[list[str], str]], langs: Sequence[str]) -> np.ndarray:
        """The model's probabilities: the hashed model's, averaged with the static head's when there is one."""
        hashed = self.proba(x)
        if self.static is None:
            return hashed
        w = self.static.weights_for(langs)
        out: np.ndarray = w * hashed + (1.0 - w) * self.static.proba(docs, langs)
        return out


def save_model(model: LinearModel, path: str | Path) -> Path:
    """Write `<path>.npz` (arrays only) and `<path>.json` (metadata); returns the .npz path."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"columns": model.columns.astype(np.int32), "weights": model.weights.astype(np.float16),
              "intercept": model.intercept.astype(np.float32),
              "temperature": np.array([model.temperature], dtype=np.float32)}
    if model.static is not None:
        arrays |= {"static_coef": model.static.head.coef.astype(np.float32),
                   "static_intercept": model.static.head.intercept.astype(np.float32)}
    meta = dict(model.metadata)
    meta.pop("static", None)
    meta.update({"format": FORMAT, "format_version": FORMAT_VERSION, "classes": list(CLASSES),
                 "features": model.config.to_json(), "temperature": model.temperature})
    if model.static is not None:
        meta["static"] = model.static.to_json()
    save_arrays_and_card(path, arrays, meta)
    return path


class ModelFileError(ValueError):
    """A model file that is missing, of another format, or inconsistent."""


@functools.cache
def load_model(path: str | Path) -> LinearModel:
    """Load a model once per process (cached by path). Raises ModelFileError with the reason."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise ModelFileError(f"model file not found: {path} (and {meta_path.name} beside it)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{meta_path}: not a {FORMAT} v{FORMAT_VERSION} model")
    if tuple(meta.get("classes", ())) != CLASSES:
        raise ModelFileError(f"{meta_path}: classes {meta.get('classes')} differ from {list(CLASSES)}")
    config = FeatureConfig.from_json(meta["features"])
    with np.load(path, allow_pickle=False) as arrays:
        columns = arrays["columns"].astype(np.int64)
        weights = arrays["weights"].astype(np.float32)
        intercept = arrays["intercept"].astype(np.float32)
        temperature = float(arrays["temperature"][0])
        static_arrays = {k: arrays[k] for k in ("static_coef", "static_intercept") if k in arrays.files}
    if weights.shape != (len(columns), len(CLASSES)) or intercept.shape != (len(CLASSES),):
        raise ModelFileError(f"{path}: weights {weights.shape} do not match {len(columns)} columns")
    if len(columns) and (columns.min() < 0 or columns.max() >= config.n_features):
        raise ModelFileError(f"{path}: feature columns out of range for the stored config")
    static = _load_static(path, meta.get("static"), static_arrays) if "static" in meta else None
    return LinearModel(config, columns, weights, intercept, temperature, meta, static)


def _load_static(path: Path, card: dict[str, Any], arrays: dict[str, np.ndarray]) -> StaticPart:
    """The static head of a model file: its arrays, and the table it names (beside the model, else shipped)."""
    if set(arrays) != {"static_coef", "static_intercept"}:
        raise ModelFileError(f"{path}: the card names a static head but its arrays are missing")
    name = str(card.get("table", ""))
    stem = next((d / name for d in (path.parent, MODELS_DIR) if (d / f"{name}.npz").is_file()), None)
    if not name or stem is None:
        raise ModelFileError(f"{path}: static word table {name!r} not found beside it nor in {MODELS_DIR}")
    try:
        table = load_table_at(stem)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{stem}: {exc}") from exc
    extra = {k: v for k, v in card.items() if k not in ("table", "temperature", "use_lang", "hashed_weight")}
    head = LogisticHead(coef=arrays["static_coef"].astype(np.float32),
                        intercept=arrays["static_intercept"].astype(np.float32),
                        temperature=float(card["temperature"]), use_lang=bool(card["use_lang"]), meta=extra)
    if head.coef.shape != (len(CLASSES), table.dim + (3 if head.use_lang else 0)):
        raise ModelFileError(f"{path}: static head of shape {head.coef.shape} does not fit table {name}")
    return StaticPart(name, table, head, {k: float(v) for k, v in card["hashed_weight"].items()})


# --- the scorer ---------------------------------------------------------------------------------------


def _readable(part: str) -> bool:
    """A token a person would take as a reason: it has a letter, a digit or an emoji (not just "?" or ",")."""
    return any(ch.isalnum() or (ord(ch) > 0x2100 and ch not in "\ufe0e\ufe0f\u200d") for ch in part)


def _readable_phrase(parts: list[str], lang: str) -> str:
    """Feature parts as a phrase: "pas" once for a negated bigram, and never before an emoji."""
    out = []
    negated = False
    for part in parts:
        if part.startswith(NEG_PREFIX):
            bare = part[len(NEG_PREFIX):]
            if negated or not any(ch.isalnum() for ch in bare):
                part = bare
            negated = True
        elif part in NEG_CUES:
            negated = True  # "pas NEG_terrible" reads "pas terrible"
        out.append(surface(part, lang))
    return " ".join(out)


# Placeholders and the language mark are not words a person would recognise as the reason.
_NOT_DRIVERS = frozenset({"_url_", "_user_", "_num_", *(lang_token(x) for x in ("fr", "en", "other"))})


class FastScorer:
    """The fast learned scorer: a ProbaModel and a SentimentScorer."""

    classes = CLASSES

    def __init__(self, path: str | Path | None = None, *, model: LinearModel | None = None) -> None:
        self.model = model if model is not None else load_model(Path(path) if path else DEFAULT_MODEL_PATH)
        self.model_version = self.model.version
        self.featurizer = Featurizer(self.model.config)
        self._last: tuple[Sequence[ScoreInput], list[str], list[tuple[list[str], str]]] | None = None
        # Per feature, how much it favours each class over the others' average: the drivers' ranking.
        self._lean = self.model.weights - self.model.weights.mean(axis=1, keepdims=True)
        # Word-block column -> row of _lean (or -1): a flat array so a text's features are looked up at once.
        self._row_of = np.full(1 << self.model.config.word_bits, -1, dtype=np.int32)
        in_words = self.model.columns < (1 << self.model.config.word_bits)
        self._row_of[self.model.columns[in_words]] = np.flatnonzero(in_words)

    def _prepare(self, items: Sequence[ScoreInput]) -> tuple[list[str], list[tuple[list[str], str]]]:
        # The opening of a text tells its language as well as the whole, and detection costs per character.
        langs = [language_of(item.text[:LANG_CHARS], item.lang) for item in items]
        docs = [self.featurizer.tokens(item.text, lang) for item, lang in zip(items, langs, strict=True)]
        return langs, docs

    def _prepared(self, items: Sequence[ScoreInput]) -> tuple[list[str], list[tuple[list[str], str]]]:
        # The cascade calls predict_proba then explain on the same batch: tokenise and detect only once.
        last = self._last  # read once: another thread may replace it
        if last is not None and last[0] is items:
            return last[1], last[2]
        langs, docs = self._prepare(items)
        self._last = (items, langs, docs)
        return langs, docs

    def predict_proba(self, items: Sequence[ScoreInput]) -> np.ndarray:
        if not items:
            return np.zeros((0, len(CLASSES)))
        langs, docs = self._prepared(items)
        return self.model.predict(self.featurizer.transform_tokens(docs), docs, langs)

    def explain(self, items: Sequence[ScoreInput], proba: np.ndarray) -> list[list[str]]:
        """Drivers of each item toward the argmax of its row of `proba` (which may come from another model)."""
        langs, docs = self._prepared(items)
        return self.drivers_batch([doc[0] for doc in docs], np.asarray(proba).argmax(axis=1).tolist(), langs)

    def drivers(self, words: list[str], label: int, lang: str) -> list[str]:
        """The word features of a text that push most toward `label`, as readable words, at most 5."""
        return self.drivers_batch([words], [label], [lang])[0]

    def drivers_batch(self, docs_words: Sequence[list[str]], labels: Sequence[int], langs: Sequence[str]
                      ) -> list[list[str]]:
        """Drivers of many texts with one vectorised lookup (a per-text numpy call costs more than the maths)."""
        tokens = [[t for t in dict.fromkeys(words) if t not in _NOT_DRIVERS] for words in docs_words]
        cache, column_of = self.featurizer._column_cache, self.featurizer.column_of
        flat = [cache.get(t) or column_of(t) for ts in tokens for t in ts]
        owner = np.repeat(np.asarray(labels, dtype=np.int64), [len(ts) for ts in tokens])
        rows = self._row_of[np.asarray(flat, dtype=np.int64)] if flat else np.zeros(0, dtype=np.int32)
        pushes = np.where(rows >= 0, self._lean[rows, owner], 0.0).tolist() if flat else []
        out: list[list[str]] = []
        at = 0
        for ts, lang in zip(tokens, langs, strict=True):
            mine = pushes[at:at + len(ts)]
            at += len(ts)
            ranked = sorted((i for i in range(len(ts)) if mine[i] > 0), key=lambda i: -mine[i])
            found: list[str] = []
            for i in ranked:
                parts = ts[i].split(" ")
                if not all(map(_readable, parts)):
                    continue
                readable = _readable_phrase(parts, lang)
                if readable not in found:
                    found.append(readable)
                    if len(found) == MAX_DRIVERS:
                        break
            out.append(found)
        return out

    def score_batch(self, items: Sequence[ScoreInput]) -> list[Sentiment]:
        if not items:
            return []
        langs, docs = self._prepared(items)
        proba = self.model.predict(self.featurizer.transform_tokens(docs), docs, langs)
        drivers = self.drivers_batch([doc[0] for doc in docs], proba.argmax(axis=1).tolist(), langs)
        return [
            sentiment_from_proba(row, lang, self.model_version, found)
            for row, lang, found in zip(proba, langs, drivers, strict=True)
        ]
