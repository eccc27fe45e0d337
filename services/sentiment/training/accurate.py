"""Training the accurate tier's logistic head on precomputed embeddings (offline: scikit-learn)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from services.sentiment.calibration import fit_temperature
from services.sentiment.scorers.accurate import CachedEmbedder, Embedder, LogisticHead, features, lang_bucket
from services.sentiment.scorers.base import CLASSES


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


def fit_head(embeddings: np.ndarray, labels: Sequence[str], langs: Sequence[str], *, c: float = 4.0,
             use_lang: bool = True, groups: Sequence[str] | None = None,
             group_weights: dict[str, float] | None = None, calibration_fraction: float = 0.2,
             prefix: str = "passage", seed: int = 0, meta: dict[str, Any] | None = None,
             sample_weight: Sequence[float] | np.ndarray | None = None) -> LogisticHead:
    """Train the head on precomputed embeddings. `groups` name the kind of each example for the class
    balancing (default: its language bucket; see cell_weights); `sample_weight` multiplies that balance row
    by row (a user's `--source-weight`). The temperature is fitted on a held-out part of the data with a head
    trained on the rest; the returned head is then refitted on everything."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    y = np.array([CLASSES.index(label) for label in labels])
    x = features(embeddings, langs, use_lang)
    groups = list(groups) if groups is not None else [lang_bucket(g) for g in langs]
    w = cell_weights(labels, groups, group_weights)
    if sample_weight is not None:
        w = w * np.asarray(sample_weight, dtype=np.float64)
        w *= len(w) / w.sum()

    def fit(idx: np.ndarray) -> LogisticRegression:
        model = LogisticRegression(C=c, max_iter=2000)
        model.fit(x[idx], y[idx], sample_weight=w[idx])
        if tuple(model.classes_) != (0, 1, 2):
            raise ValueError("training data must hold all three classes")
        return model

    everything = np.arange(len(y))
    temperature = 1.0
    notes: dict[str, Any] = {}
    strata = [f"{g}:{label}" for g, label in zip(groups, labels, strict=True)]
    smallest = min(Counter(strata).values())
    if calibration_fraction > 0 and smallest < 2:
        # A (group, class) cell of one example cannot sit on both sides of a stratified split, and a plain
        # split may take a class away from the fit: no temperature rather than no model.
        notes["calibration"] = "skipped: a (group, class) cell holds a single example"
    elif calibration_fraction > 0:
        fit_idx, cal_idx = train_test_split(everything, test_size=calibration_fraction, random_state=seed,
                                            stratify=strata)
        held = fit(fit_idx)
        temperature = fit_temperature(held.decision_function(x[cal_idx]), y[cal_idx])
    model = fit(everything)
    return LogisticHead(coef=model.coef_.astype(np.float32), intercept=model.intercept_.astype(np.float32),
                        temperature=temperature, use_lang=use_lang, prefix=prefix,
                        meta={"c": c, "trained_on": len(y), **notes, **(meta or {})})


def train_head(texts: Sequence[str], labels: Sequence[str], langs: Sequence[str], *,
               embedder: Embedder | None = None, prefix: str = "passage", **kwargs: Any) -> LogisticHead:
    """Embed the texts and train a head on them (what a user's own labelled comments go through)."""
    embed = embedder or CachedEmbedder(prefix=prefix, cache_size=0)
    return fit_head(embed(list(texts)), labels, langs, prefix=prefix, **kwargs)
