"""Dev and cross-validated macro-F1 of each sentiment scorer, side by side, with bootstrap 95 % intervals.

Why: the shipped models were tuned while looking at the dev split, so dev figures flatter them (held-out
benchmark sets scored 0.03-0.07 lower). Cross-validation retrains each learned scorer on 4/5 of the training
files and scores the fifth it never saw, five times, so every training text gets an unseen prediction: a
sample ten times larger than dev, and never looked at while tuning.

- lexicon: nothing is trained, so its "cross-validated" figure is simply its score on the training files.
- fast: `train_fast` with the shipped model's settings on train_fr + train_en, 5 folds, the static word-vector
  head included (each fold fits both temperatures, as shipping does: they weigh the two heads' average). The
  out-of-fold probabilities, of the whole tier and of its hashed model alone ("fast, hashed only"), are kept
  in the cache. The static table's vocabulary was read from all of train_fr and train_en (words, no labels).
- accurate: the e5 head (`fit_head`, the shipped settings but tweets only) on the train_fr tweets + a fixed
  1,500-row part of the shipped train_en sample, 5 folds over cached embeddings (`--cache DIR`; `--embed`
  fills it first: ~5 minutes on an idle core). Reviews are left out of this pool because they are long
  and embedding them took too long on a shared 2-core machine; the shipped head also saw them (weight 0.3).
- cascade: the fast and accurate out-of-fold probabilities combined by the service's own rule
  (`CascadePolicy`, `route`, `combine`) on the rows that have both.
Every row's fold is fixed (seeded per file), so the fast and accurate folds agree. Languages come from the
file (the service detects them; dev figures from bench_sentiment_scorers.py use detection). Measured on
tweets only: French = DEFT 2017 tweets, English = SemEval + airline tweets, and SemEval alone.
Intervals: 1,000 bootstrap resamples of the scored rows (percentile). Usage:
    python bench/bench_sentiment_cv.py [--cache DIR] [--data DIR] [--folds 5]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from train_sentiment_accurate import REVIEW_WEIGHT, en_sample
from train_sentiment_accurate import C as HEAD_C

from services.sentiment.scorers.base import CLASSES, ScoreInput
from services.sentiment.scorers.cascade import CascadePolicy, combine, route

DATA = Path("/work/shared/data/sentiment")
BOOTSTRAP = 1000
RESPOND_FLOOR = 0.5  # services/escalation/policy.py RespondRules.min_confidence
EN_CV_ROWS = 1500
AVERAGE = f"average (w={CascadePolicy().fast_weight})"


def load(data: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (data / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]


def is_review(row: dict[str, Any]) -> bool:
    return "Allocine" in row["source"] or "Amazon" in row["source"]


def macro_f1_idx(gold: np.ndarray, pred: np.ndarray, k: int = 3) -> float:
    """Macro-F1 over the classes present in gold (indices into CLASSES), from one confusion count."""
    confusion = np.bincount(gold * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(confusion).astype(float)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    present = support > 0
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros(k), where=(support + predicted) > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def with_interval(gold: list[str], pred: list[str], seed: int = 0) -> tuple[float, float, float, int]:
    """Macro-F1 and its 95 % bootstrap interval (percentile, BOOTSTRAP resamples), and n."""
    g = np.array([CLASSES.index(x) for x in gold])
    p = np.array([CLASSES.index(x) for x in pred])
    point = macro_f1_idx(g, p)
    rng = np.random.default_rng(seed)
    stats = [macro_f1_idx(g[idx], p[idx]) for idx in (rng.integers(0, len(g), len(g)) for _ in range(BOOTSTRAP))]
    low, high = np.percentile(stats, [2.5, 97.5])
    return point, float(low), float(high), len(g)


def folds_for(n: int, k: int, seed: int) -> np.ndarray:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    out = np.empty(n, dtype=int)
    for rank, i in enumerate(order):
        out[i] = rank % k
    return out


def subsets(rows: list[dict[str, Any]], lang: str) -> dict[str, list[int]]:
    """Which rows each figure is measured on: tweets of the language, and SemEval alone for English."""
    tweets = [i for i, r in enumerate(rows) if not is_review(r)]
    out = {f"{lang.upper()} tweets": tweets}
    if lang == "en":
        out["EN SemEval"] = [i for i in tweets if "SemEval" in rows[i]["source"]]
    return out


def labels_of(proba: np.ndarray) -> list[str]:
    return [CLASSES[j] for j in proba.argmax(axis=1)]


class Pools:
    """The training files with their fixed folds, and the dev files."""

    def __init__(self, data: Path, k: int) -> None:
        self.k = k
        self.train = {"fr": load(data, "train_fr"), "en": load(data, "train_en")}
        self.dev = {"fr": load(data, "dev_fr"), "en": load(data, "dev_en")}
        self.fold = {"fr": folds_for(len(self.train["fr"]), k, 1), "en": folds_for(len(self.train["en"]), k, 2)}
        # The accurate tier's English pool: a fixed part of the rows its shipped head was trained on.
        sample = en_sample(len(self.train["en"]))
        random.Random(3).shuffle(sample)
        self.en_cv = sorted(sample[:EN_CV_ROWS])
        self.fr_cv = [i for i, r in enumerate(self.train["fr"]) if not is_review(r)]


def embed_all(pools: Pools, cache: Path) -> None:
    """Fill the embedding cache: dev files, train_fr and the English CV rows (skips what is there)."""
    from train_sentiment_accurate import embed

    from services.sentiment.scorers.accurate import CachedEmbedder

    cache.mkdir(parents=True, exist_ok=True)
    embedder = CachedEmbedder(prefix="passage", cache_size=0)
    embed([r for r in pools.dev["fr"] if not is_review(r)], "dev_fr_tweets", cache, embedder)
    embed([pools.train["fr"][i] for i in pools.fr_cv], "train_fr_tweets", cache, embedder)
    embed([pools.train["en"][i] for i in pools.en_cv], f"train_en_cv{EN_CV_ROWS}", cache, embedder)
    embed(pools.dev["en"], "dev_en", cache, embedder)


def fast_fold_path(cache: Path, k: int, f: int) -> Path:
    return cache / f"fast2_fold{f}of{k}.npz"


def fast_oof(pools: Pools, cache: Path | None, progress: bool = True) -> None:
    """Refit the fast tier once per fold and keep each fold's held-out probabilities in the cache (a fold
    already there is skipped, so an interrupted run resumes)."""
    from services.sentiment.scorers.fast import FastScorer
    from services.sentiment.scorers.static import DEFAULT_TABLE, load_table
    from services.sentiment.training.fast import train_fast

    for f in range(pools.k):
        path = fast_fold_path(cache, pools.k, f) if cache is not None else None
        if path is not None and path.exists():
            continue
        started = time.perf_counter()
        texts, langs, labels, sources = [], [], [], []
        for lang, rows in pools.train.items():
            for i, r in enumerate(rows):
                if pools.fold[lang][i] != f:
                    texts.append(r["text"])
                    langs.append(lang)
                    labels.append(r["label"])
                    sources.append(r["source"])
        scorer = FastScorer(model=train_fast(texts, langs, labels, static_table=(DEFAULT_TABLE, load_table()),
                                           sources=sources))
        held: dict[str, np.ndarray] = {}
        for lang, rows in pools.train.items():
            ix = [i for i in range(len(rows)) if pools.fold[lang][i] == f]
            items = [ScoreInput(rows[i]["text"], lang) for i in ix]
            held[f"{lang}_idx"] = np.array(ix)
            held[f"{lang}_proba"] = scorer.predict_proba(items)
            held[f"{lang}_hashed"] = scorer.model.proba(scorer.featurizer.transform([x.text for x in items],
                                                                                     [lang] * len(items)))
        if path is not None:
            np.savez(path, **held)
        if progress:
            print(f"  fast fold {f + 1}/{pools.k}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def fast_folds(pools: Pools, cache: Path | None, key: str = "proba"
               ) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The fast tier's out-of-fold probabilities from the folds in the cache: (row indices, proba) per language;
    when only some folds are done, their held-out rows (a random part of the data) are what is measured."""
    if cache is None:
        return None
    parts = [fast_fold_path(cache, pools.k, f) for f in range(pools.k)]
    done = [p for p in parts if p.exists()]
    if not done:
        return None
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for lang in pools.train:
        ix, proba = [], []
        for p in done:
            with np.load(p) as z:
                ix.append(z[f"{lang}_idx"])
                proba.append(z[f"{lang}_{key}"])
        order = np.argsort(np.concatenate(ix))
        out[lang] = (np.concatenate(ix)[order], np.vstack(proba)[order])
    return out


def accurate_oof(pools: Pools, cache: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Out-of-fold accurate-tier probabilities on train_fr and the train_en sample: (row indices, proba)."""
    from services.sentiment.training.accurate import fit_head

    files = {"fr": (cache / "train_fr_tweets_p.npy", pools.fr_cv), "en": (cache / f"train_en_cv{EN_CV_ROWS}_p.npy",
                                                                         pools.en_cv)}
    # A language whose embeddings are not cached yet is left out (its rows show "-").
    x = {lang: np.load(path) for lang, (path, _) in files.items() if path.exists()}
    idx = {lang: np.array(files[lang][1]) for lang in x}
    rows = {lang: [pools.train[lang][i] for i in idx[lang]] for lang in idx}
    fold = {lang: pools.fold[lang][idx[lang]] for lang in idx}
    out = {lang: np.zeros((len(idx[lang]), 3)) for lang in idx}
    for f in range(pools.k):
        xs, labels, langs, groups = [], [], [], []
        for lang in idx:
            keep = fold[lang] != f
            xs.append(x[lang][keep])
            for r in (r for r, k in zip(rows[lang], keep, strict=True) if k):
                labels.append(r["label"])
                langs.append(lang)
                groups.append(f"{lang}:{'review' if is_review(r) else 'tweet'}")
        head = fit_head(np.vstack(xs), labels, langs, c=HEAD_C, groups=groups,
                        group_weights={"fr:review": REVIEW_WEIGHT}, prefix="passage")
        for lang in idx:
            held = fold[lang] == f
            out[lang][held] = head.predict_proba(x[lang][held], [lang] * int(held.sum()))
    return {lang: (idx[lang], out[lang]) for lang in idx}


def cascade_of(fast: np.ndarray, accurate: np.ndarray, policy: CascadePolicy) -> tuple[np.ndarray, float]:
    """The service's rule applied row by row (reach 0): probabilities and the share sent to the accurate tier."""
    reasons = route(fast, [0] * len(fast), policy)
    chosen = [i for i, r in enumerate(reasons) if r is not None]
    out = fast.copy()
    if chosen:
        out[chosen] = combine(fast[chosen], accurate[chosen], policy.fast_weight)
    return out, len(chosen) / max(1, len(fast))


def dev_proba(pools: Pools, cache: Path | None) -> dict[str, dict[str, np.ndarray]]:
    """The shipped models' dev probabilities (language from the file), for the dev column."""
    from services.sentiment.scorers.accurate import load_default_head
    from services.sentiment.scorers.fast import FastScorer
    from services.sentiment.scorers.lexicon import LexiconScorer

    fast, lexicon = FastScorer(), LexiconScorer()
    out: dict[str, dict[str, np.ndarray]] = {"lexicon": {}, "fast": {}, "fast, hashed only": {}}
    for lang, rows in pools.dev.items():
        items = [ScoreInput(r["text"], lang) for r in rows]
        out["fast"][lang] = fast.predict_proba(items)
        out["fast, hashed only"][lang] = fast.model.proba(fast.featurizer.transform([r["text"] for r in rows],
                                                                                    [lang] * len(rows)))
        out["lexicon"][lang] = one_hot(lexicon, items)
    if cache is not None and (cache / "dev_fr_tweets_p.npy").exists():
        # Dev French reviews are not embedded (see the module docstring): their rows get the fast tier's
        # answer, and only tweets are measured.
        head = load_default_head()
        out["accurate"] = {}
        if (cache / "dev_en_p.npy").exists():
            out["accurate"]["en"] = head.predict_proba(np.load(cache / "dev_en_p.npy"), ["en"] * len(pools.dev["en"]))
        fr = out["fast"]["fr"].copy()
        tweets = [i for i, r in enumerate(pools.dev["fr"]) if not is_review(r)]
        fr[tweets] = head.predict_proba(np.load(cache / "dev_fr_tweets_p.npy"), ["fr"] * len(tweets))
        out["accurate"]["fr"] = fr
    return out


def one_hot(scorer: Any, items: list[ScoreInput]) -> np.ndarray:
    """A scorer without probabilities as a matrix: its confidence in its label's column, 0 elsewhere."""
    out = np.zeros((len(items), 3))
    for start in range(0, len(items), 1000):
        for i, s in enumerate(scorer.score_batch(items[start:start + 1000]), start):
            out[i, CLASSES.index(s.label.value)] = s.confidence
    return out


def negative_reliability(gold: list[str], proba: np.ndarray, floor: float) -> str:
    """How far a negative label's confidence can be trusted: per confidence band of the comments labelled
    negative, the mean confidence against the share truly negative; and the precision at the respond floor."""
    labelled = proba.argmax(axis=1) == CLASSES.index("negative")
    conf = proba.max(axis=1)
    truly = np.array([g == "negative" for g in gold])
    cells = []
    for low, high in ((0.35, 0.5), (0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01)):
        band = labelled & (conf >= low) & (conf < high)
        if band.sum() >= 20:
            cells.append(f"[{low:.2f},{min(high, 1.0):.2f}) {conf[band].mean():.2f}->{truly[band].mean():.2f}")
    at_floor = labelled & (conf >= floor)
    precision = truly[at_floor].mean() if at_floor.any() else float("nan")
    return f"precision at >= {floor}: {precision:.3f} (n={int(at_floor.sum())}); " + "  ".join(cells)


def table(data: Path, cache: Path | None, k: int, with_fast: bool = True) -> list[dict[str, Any]]:
    """One row per (scorer, subset): dev and cross-validated macro-F1 with intervals."""
    from services.sentiment.scorers.lexicon import LexiconScorer

    pools = Pools(data, k)
    policy = CascadePolicy()
    dev = dev_proba(pools, cache)
    if "accurate" in dev:
        dev[AVERAGE] = {lang: combine(dev["fast"][lang], dev["accurate"][lang], policy.fast_weight)
                                  for lang in dev["accurate"]}
        dev["cascade"] = {lang: cascade_of(dev["fast"][lang], dev["accurate"][lang], policy)[0]
                          for lang in dev["accurate"]}
    # Cross-validated (or, for the lexicon, simply unseen) predictions on the training rows: (row indices, proba).
    cv: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    lexicon = LexiconScorer()
    cv["lexicon"] = {lang: (np.arange(len(rows)), one_hot(lexicon, [ScoreInput(r["text"], lang) for r in rows]))
                     for lang, rows in pools.train.items()}
    if with_fast:
        fast_oof(pools, cache)
    f_cv = fast_folds(pools, cache)
    if f_cv is not None:
        cv["fast"] = f_cv
        cv["fast, hashed only"] = fast_folds(pools, cache, "hashed") or {}
    shares: dict[str, float] = {}
    if cache is not None and (cache / "train_fr_tweets_p.npy").exists():
        cv["accurate"] = accurate_oof(pools, cache)
    if f_cv is not None and "accurate" in cv:
        cv[AVERAGE], cv["cascade"] = {}, {}
        for lang, (ix, p) in cv["accurate"].items():
            # The rows both tiers have an out-of-fold answer for.
            fast_ix, fast_p = f_cv[lang]
            where = {int(i): j for j, i in enumerate(fast_ix)}
            both = [j for j, i in enumerate(ix) if int(i) in where]
            if not both:
                continue
            fp = fast_p[[where[int(ix[j])] for j in both]]
            cv[AVERAGE][lang] = (ix[both], combine(fp, p[both], policy.fast_weight))
            mixed, shares[lang] = cascade_of(fp, p[both], policy)
            cv["cascade"][lang] = (ix[both], mixed)
    reliability: dict[str, str] = {}
    for name in ("lexicon", "fast", "accurate"):
        if name in cv:
            gold, stacked = [], []
            for lang, (ix, proba) in cv[name].items():
                tweets = [j for j, i in enumerate(ix) if not is_review(pools.train[lang][i])]
                gold += [pools.train[lang][ix[j]]["label"] for j in tweets]
                stacked.append(proba[tweets])
            reliability[name] = negative_reliability(gold, np.vstack(stacked), RESPOND_FLOOR)
    results: list[dict[str, Any]] = [{"reliability": reliability}]
    for name in ("lexicon", "fast, hashed only", "fast", "accurate", AVERAGE, "cascade"):
        for lang in ("fr", "en"):
            for subset, dev_rows in subsets(pools.dev[lang], lang).items():
                row: dict[str, Any] = {"scorer": name, "subset": subset}
                if lang in dev.get(name, {}):
                    gold = [pools.dev[lang][i]["label"] for i in dev_rows]
                    row["dev"] = with_interval(gold, [labels_of(dev[name][lang])[i] for i in dev_rows])
                if lang in cv.get(name, {}):
                    ix, proba = cv[name][lang]
                    train_rows = [pools.train[lang][i] for i in ix]
                    chosen = subsets(train_rows, lang)[subset]
                    pred = labels_of(proba)
                    row["cv"] = with_interval([train_rows[i]["label"] for i in chosen], [pred[i] for i in chosen])
                if name == "cascade" and lang in shares:
                    row["escalated"] = shares[lang]
                results.append(row)
    return results


def fmt(cell: tuple[float, float, float, int] | None) -> str:
    if cell is None:
        return f"{'-':>22s}"
    point, low, high, n = cell
    return f"{point:.3f} [{low:.3f}-{high:.3f}] n={n:<5d}"


def print_reliability(results: list[dict[str, Any]]) -> None:
    for r in results:
        for name, line in r.get("reliability", {}).items():
            print(f"negative-label confidence, {name}, on training tweets it never trained on (bands: mean "
                  f"confidence->share truly negative): {line}")


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'scorer':17s} {'subset':11s} {'dev macro-F1 [95% CI]':>26s} {'cross-validated [95% CI]':>28s}")
    for r in results:
        if "reliability" in r:
            continue
        extra = f"  (accurate tier on {r['escalated']:.0%})" if "escalated" in r else ""
        print(f"{r['scorer']:17s} {r['subset']:11s} {fmt(r.get('dev')):>26s} {fmt(r.get('cv')):>28s}{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--cache", type=Path, help="embedding cache (bench/train_sentiment_accurate.py's)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--embed", action="store_true", help="fill the embedding cache first")
    parser.add_argument("--no-fast", action="store_true",
                        help="skip the fast tier's folds (each refits the fast model: long on a busy machine)")
    args = parser.parse_args()
    if args.embed and args.cache:
        embed_all(Pools(args.data, args.folds), args.cache)
    results = table(args.data, args.cache, args.folds, with_fast=not args.no_fast)
    print_table(results)
    print_reliability(results)


if __name__ == "__main__":
    main()
