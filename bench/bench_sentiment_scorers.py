"""Every sentiment scorer side by side: dev quality per language, comments/s on one core, peak RSS.

Each scorer in SCORERS runs in a fresh process pinned to one core (OMP/OPENBLAS threads 1, sched_setaffinity)
so that its speed and peak memory are its own. Quality is on the dev sets only, the language detected as in
the service (no `lang` given): FR tweets (DEFT, 3 classes) macro-F1 and negative recall, FR reviews (binary)
accuracy where a neutral answer counts as wrong, EN tweets (SemEval + airline) macro-F1 and negative recall,
and EN SemEval tweets alone (the published reference points are on SemEval).
Speed: `score_batch` on the dev texts in batches of 1000 after one warm-up batch.
Then, unless --no-cv: dev and cross-validated macro-F1 side by side with bootstrap 95 % intervals, per scorer
(bench/bench_sentiment_cv.py explains the folds; --cache DIR holds its embeddings and fast-tier folds). Usage:
    python bench/bench_sentiment_scorers.py [data_dir] [--cache DIR] [--no-cv] [--no-fast-cv] [scorer ...]
To add a scorer, append a row to SCORERS: a name and a zero-argument factory path "module:callable".
"""

from __future__ import annotations

import os

# Before numpy/scipy load their thread pools: the numbers are per core.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import importlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

DATA = Path("/work/shared/data/sentiment")
BATCH = 1000

# name -> "module:factory" (called with no argument, returns a SentimentScorer). Other rows go here.
SCORERS: list[tuple[str, str]] = [
    ("lexicon", "services.sentiment.scorers.lexicon:LexiconScorer"),
    ("fast, hashed only", "bench_sentiment_scorers:fast_hashed_only"),
    ("fast", "services.sentiment.scorers.fast:FastScorer"),
    # Accurate tier and cascades with the embedding cache off (this bench scores the same texts twice).
    ("accurate", "bench_sentiment_cascade:accurate_uncached"),
    ("cascade", "bench_sentiment_cascade:cascade_default"),
    ("cascade-neg0.7", "bench_sentiment_cascade:cascade_07"),
]

COLUMNS = [
    ("fr_tweets_macro_f1", "FR tweets F1"),
    ("fr_tweets_neg_recall", "FR neg recall"),
    ("fr_reviews_accuracy", "FR reviews acc"),
    ("en_tweets_macro_f1", "EN tweets F1"),
    ("en_tweets_neg_recall", "EN neg recall"),
    ("en_semeval_macro_f1", "EN SemEval F1"),
    ("comments_per_s", "comments/s/core"),
    ("peak_rss_mb", "peak RSS MB"),
]


def fast_hashed_only() -> object:
    """The shipped fast model without its static word-vector head: what the static head adds, side by side."""
    import dataclasses

    from services.sentiment.scorers.fast import DEFAULT_MODEL_PATH, FastScorer, load_model

    return FastScorer(model=dataclasses.replace(load_model(DEFAULT_MODEL_PATH), static=None))


def load(data: Path, name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (data / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def measure(name: str, factory_path: str, data: Path) -> dict[str, object]:
    """Run in the child process: quality and speed of one scorer."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from services.sentiment.evaluation import evaluate
    from services.sentiment.scorers.base import ScoreInput

    module, attr = factory_path.split(":")
    started = time.perf_counter()
    scorer = getattr(importlib.import_module(module), attr)()
    load_s = time.perf_counter() - started
    fr, en = load(data, "dev_fr.jsonl"), load(data, "dev_en.jsonl")

    def labels(rows: list[dict[str, str]]) -> list[str]:
        out: list[str] = []
        for i in range(0, len(rows), BATCH):
            out += [s.label.value for s in scorer.score_batch([ScoreInput(r["text"]) for r in rows[i:i + BATCH]])]
        return out

    fr_pred, en_pred = labels(fr), labels(en)
    tweets = [i for i, r in enumerate(fr) if "DEFT" in r["source"]]
    reviews = [i for i, r in enumerate(fr) if "DEFT" not in r["source"]]
    fr_tweets = evaluate([fr[i]["label"] for i in tweets], [fr_pred[i] for i in tweets])
    fr_reviews = evaluate([fr[i]["label"] for i in reviews], [fr_pred[i] for i in reviews])
    en_all = evaluate([r["label"] for r in en], en_pred)
    semeval = [i for i, r in enumerate(en) if "SemEval" in r["source"]]
    en_semeval = evaluate([en[i]["label"] for i in semeval], [en_pred[i] for i in semeval])

    texts = [ScoreInput(r["text"]) for r in fr + en]
    scorer.score_batch(texts[:BATCH])  # warm-up: caches, lazy loads
    started = time.perf_counter()
    for i in range(0, len(texts), BATCH):
        scorer.score_batch(texts[i:i + BATCH])
    rate = len(texts) / (time.perf_counter() - started)
    return {
        "scorer": name, "model_version": scorer.model_version, "load_s": round(load_s, 2),
        "fr_tweets_macro_f1": fr_tweets.macro_f1, "fr_tweets_neg_recall": fr_tweets.recall("negative"),
        "fr_reviews_accuracy": fr_reviews.accuracy, "en_tweets_macro_f1": en_all.macro_f1,
        "en_tweets_neg_recall": en_all.recall("negative"), "en_semeval_macro_f1": en_semeval.macro_f1,
        "comments_per_s": rate,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    args = sys.argv[1:]
    if {"-h", "--help"} & set(args):
        print(__doc__)
        return
    if args and args[0] == "--one":  # child mode
        name, data = args[1], Path(args[2])
        print(json.dumps(measure(name, dict(SCORERS)[name], data)))
        return
    data = DATA
    if args and Path(args[0]).is_dir():
        data, args = Path(args[0]), args[1:]
    cache: Path | None = None
    if "--cache" in args:
        at = args.index("--cache")
        cache, args = Path(args[at + 1]), args[:at] + args[at + 2:]
    with_cv, with_fast_cv = "--no-cv" not in args, "--no-fast-cv" not in args
    args = [a for a in args if a not in ("--no-cv", "--no-fast-cv")]
    unknown = set(args) - {n for n, _ in SCORERS}
    if unknown:
        sys.exit(f"unknown scorer(s) {sorted(unknown)}; known: {[n for n, _ in SCORERS]}")
    wanted = args or [n for n, _ in SCORERS]
    rows = []
    for name in wanted:
        done = subprocess.run([sys.executable, __file__, "--one", name, str(data)], capture_output=True,
                              text=True, check=False)
        if done.returncode:
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"measured {name}", file=sys.stderr, flush=True)
    print(f"dev sets from {data}; one core; batches of {BATCH}; language detected")
    header = f"{'scorer':<17} {'version':<22}" + "".join(f" {title:>15}" for _, title in COLUMNS)
    print(header)
    for row in rows:
        cells = []
        for key, _ in COLUMNS:
            value = float(row[key])  # type: ignore[arg-type]
            cells.append(f" {value:>15.0f}" if key in ("comments_per_s", "peak_rss_mb") else f" {value:>15.3f}")
        print(f"{row['scorer']!s:<17} {row['model_version']!s:<22}" + "".join(cells))
    if with_cv:
        import bench_sentiment_cv

        print("\nquality: dev vs cross-validated (language from the file; tweets only)")
        results = bench_sentiment_cv.table(data, cache, 5, with_fast=with_fast_cv)
        bench_sentiment_cv.print_table(results)
        bench_sentiment_cv.print_reliability(results)


if __name__ == "__main__":
    main()
