"""Training the fast scorer's model (offline: scikit-learn): fit, calibrate on a held-out share, refit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from services.sentiment.calibration import fit_temperature
from services.sentiment.scorers.accurate import lang_bucket
from services.sentiment.scorers.base import CLASSES
from services.sentiment.scorers.fast import FeatureConfig, Featurizer, LinearModel, StaticPart
from services.sentiment.scorers.static import StaticTable
from services.sentiment.training.accurate import fit_head

# The static head's share is 1 − these: French tweets gained most from it (few training tweets, where knowing
# which words are alike matters most), English tweets from an even split (bench/README.md, static word vectors).
HASHED_WEIGHT = {"fr": 0.3, "en": 0.5, "other": 0.5}
STATIC_C = 8.0
# Binary sources (reviews: no neutral) weigh this much in the static head's class balance (see static_groups).
BINARY_SOURCE_WEIGHT = 0.3
# Fewer held-out rows than this fit a temperature to noise (55 comments gave 8 rows and a temperature of 0.2,
# the grid's edge: every label near-certain); below it the temperature stays 1.
MIN_CALIBRATION_ROWS = 30
STATIC_CALIBRATION = 0.2


def static_groups(langs: Sequence[str], labels: Sequence[str], sources: Sequence[str] | None
                  ) -> tuple[list[str], dict[str, float]]:
    """The static head's balancing groups: language bucket x whether the row's source is binary (never says
    neutral), binary groups weighted BINARY_SOURCE_WEIGHT. Balanced by language alone, the head learnt that
    a short French text is neutral (the long binary reviews owned the other two classes), and French tweets
    fell from 0.63 to 0.51 cross-validated; by source, 0.58; this grouping is what the fast tier was measured
    with (bench/README.md, static word vectors)."""
    rows_sources = list(sources) if sources is not None else [""] * len(labels)
    seen: dict[str, set[str]] = {}
    for source, label in zip(rows_sources, labels, strict=True):
        seen.setdefault(source, set()).add(label)
    groups = [f"{lang_bucket(lang)}:{'binary' if 'neutral' not in seen[source] else 'three-class'}"
              for lang, source in zip(langs, rows_sources, strict=True)]
    return groups, {g: BINARY_SOURCE_WEIGHT for g in set(groups) if g.endswith(":binary")}


def _fit_lr(x: sp.csr_matrix, y: np.ndarray, c: float, class_weight: Any, sample_weight: np.ndarray | None,
            max_iter: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, class_weight=class_weight, max_iter=max_iter, solver="lbfgs")
    clf.fit(x, y, sample_weight=sample_weight)
    return clf


def train_fast(
    texts: Sequence[str],
    langs: Sequence[str],
    labels: Sequence[str],
    *,
    config: FeatureConfig | None = None,
    c: float = 25.0,
    class_weight: Any = "balanced",
    calibration_share: float = 0.15,
    sample_weight: Sequence[float] | None = None,
    seed: int = 0,
    max_iter: int = 1000,
    metadata: dict[str, Any] | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
    static_table: tuple[str, StaticTable] | None = None,
    hashed_weight: dict[str, float] | None = None,
    static_c: float = STATIC_C,
    sources: Sequence[str] | None = None,
) -> LinearModel:
    """Train on labelled texts: fit on (1 − share), fit the temperature on the held-out share, refit on all.

    With `static_table` (its name and the table), a logistic head on the texts' static word vectors is trained
    too (its own temperature on a held-out fifth, classes balanced per `static_groups`, from each row's
    `sources` entry when given, times `sample_weight`) and averaged with the hashed model at predict time,
    `hashed_weight` per language; it needs all three classes, so on binary data the model is the hashed one
    alone (the metadata says so).
    Labels must be in CLASSES; a class may be absent (binary data) but at least two must occur.
    """
    config = config or FeatureConfig()
    unknown = sorted({lab for lab in labels} - set(CLASSES))
    if unknown:
        raise ValueError(f"unknown labels {unknown}; expected {', '.join(CLASSES)}")
    y = np.array([CLASSES.index(lab) for lab in labels])
    if len(set(y.tolist())) < 2:
        raise ValueError("training needs at least two different labels")
    weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    featurizer = Featurizer(config)
    progress(f"featurising {len(texts)} texts")
    docs = [featurizer.tokens(t, lang) for t, lang in zip(texts, langs, strict=True)]
    x = featurizer.transform_tokens(docs)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_cal = int(len(y) * calibration_share)
    n_cal = n_cal if n_cal >= MIN_CALIBRATION_ROWS else 0
    temperature = 1.0
    if n_cal:
        cal, fit = order[:n_cal], order[n_cal:]
        progress(f"fitting on {len(fit)}, calibrating on {len(cal)} held out")
        clf = _fit_lr(x[fit], y[fit], c, class_weight, None if weights is None else weights[fit], max_iter)
        temperature = fit_temperature(full_logits(clf, x[cal]), y[cal])
    progress(f"fitting on all {len(y)} (temperature {temperature:.3f})")
    clf = _fit_lr(x, y, c, class_weight, weights, max_iter)
    coef, intercept = full_coef(clf)
    used = np.flatnonzero(np.abs(coef).max(axis=1) > 0).astype(np.int32)
    meta = dict(metadata or {})
    meta.setdefault("version", "fast-custom")
    meta["training"] = {**meta.get("training", {}), "examples": len(y), "c": c,
                        "class_weight": class_weight if isinstance(class_weight, str) else "custom",
                        "calibration_share": calibration_share if n_cal else 0.0}
    static = None
    if static_table is not None:
        if len(set(y.tolist())) == len(CLASSES):
            name, table = static_table
            progress(f"fitting the static word-vector head ({name})")
            groups, group_weights = static_groups(langs, labels, sources)
            share = STATIC_CALIBRATION if len(y) * STATIC_CALIBRATION >= MIN_CALIBRATION_ROWS else 0.0
            head = fit_head(table.embed_tokens([words for words, _ in docs]), labels, langs, c=static_c, groups=groups,
                            group_weights=group_weights, calibration_fraction=share, seed=seed,
                            sample_weight=weights,
                            meta={"binary_source_weight": BINARY_SOURCE_WEIGHT})
            static = StaticPart(name, table, head, dict(hashed_weight or HASHED_WEIGHT))
        else:
            meta["training"]["static_head"] = "skipped: it needs examples of all three classes"
    return LinearModel(config, used, coef[used].astype(np.float32), intercept.astype(np.float32), temperature,
                       meta, static)


def full_coef(clf: Any) -> tuple[np.ndarray, np.ndarray]:
    """(n_features, 3) weights and (3,) intercept in CLASSES order, whatever classes the data had."""
    coef = np.zeros((clf.coef_.shape[1], len(CLASSES)), dtype=np.float64)
    intercept = np.zeros(len(CLASSES))
    present = [int(k) for k in clf.classes_]
    if len(present) == 2:
        # sklearn keeps one row for two classes: the logit of the second; split it symmetrically.
        coef[:, present[1]] = clf.coef_[0] / 2
        coef[:, present[0]] = -clf.coef_[0] / 2
        intercept[present[1]], intercept[present[0]] = clf.intercept_[0] / 2, -clf.intercept_[0] / 2
    else:
        for row, k in enumerate(present):
            coef[:, k] = clf.coef_[row]
            intercept[k] = clf.intercept_[row]
    # A class the data never showed gets a very low intercept, so it is (almost) never predicted.
    for k in set(range(len(CLASSES))) - set(present):
        intercept[k] = -30.0
    return coef, intercept


def full_logits(clf: Any, x: sp.csr_matrix) -> np.ndarray:
    coef, intercept = full_coef(clf)
    logits: np.ndarray = np.asarray(x @ coef) + intercept
    return logits
