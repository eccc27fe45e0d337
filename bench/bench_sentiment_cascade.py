"""The cascade's trade-off curve on dev (quality vs share escalated), and bench factories for the scorer table.

`python bench/bench_sentiment_cascade.py [data_dir]` prints, for the fast tier, the accurate tier and the
cascade at several policies: FR tweets macro-F1 and negative recall, FR reviews accuracy (neutral counts as
wrong), EN tweets macro-F1 and negative recall, and the share of comments escalated; plus, on the escalated
comments only, macro-F1 of the averaged probabilities against the accurate tier alone. The language is
detected as in the service. One accurate scorer is shared so dev is embedded once.

Speed and memory per scorer come from bench/bench_sentiment_scorers.py, whose rows use the factories below:
they build the accurate tier with its embedding cache off, because that bench scores the same texts twice
and a warm cache would report cache speed instead of model speed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from services.sentiment.evaluation import evaluate
from services.sentiment.scorers.accurate import CachedEmbedder, EmbeddingScorer, load_default_head
from services.sentiment.scorers.base import CLASSES, ScoreInput
from services.sentiment.scorers.cascade import CascadePolicy, CascadeScorer, combine, route
from services.sentiment.scorers.fast import FastScorer
from services.sentiment.scorers.language import language_of

DATA = Path("/work/shared/data/sentiment")
BATCH = 1000
# (name, unsure_below, negative_at): the points of the trade-off curve. The rule reads each comment alone
# (no per-batch cap), so the escalated share is a property of the traffic and the thresholds.
CURVE = [
    ("neg>=0.7", 0.0, 0.7),
    ("neg>=0.5 (default)", 0.0, 0.5),
    ("neg>=0.4", 0.0, 0.4),
    ("neg>=0.4|top<0.6", 0.6, 0.4),
    ("neg>=0.3|top<0.7", 0.7, 0.3),
]


def accurate_uncached() -> EmbeddingScorer:
    head = load_default_head()
    return EmbeddingScorer(head, CachedEmbedder(prefix=head.prefix, cache_size=0))


def _cascade(negative_at: float) -> CascadeScorer:
    return CascadeScorer(FastScorer(), accurate_uncached(), CascadePolicy(negative_at=negative_at))


def cascade_default() -> CascadeScorer:
    return _cascade(CascadePolicy().negative_at)


def cascade_07() -> CascadeScorer:
    return _cascade(0.7)


def load(data: Path, name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (data / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def is_review(row: dict[str, str]) -> bool:
    return "Allocine" in row["source"] or "Amazon" in row["source"]


def macro_f1(gold: list[str], pred: list[str]) -> float:
    return evaluate(gold, pred).macro_f1


def recall(gold: list[str], pred: list[str], label: str) -> float:
    hits = [p == label for g, p in zip(gold, pred, strict=True) if g == label]
    return sum(hits) / len(hits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", type=Path, default=DATA, help=f"labelled files (default: {DATA})")
    data = parser.parse_args().data
    if not (data / "dev_fr.jsonl").is_file():
        parser.error(f"no dev_fr.jsonl in {data}")
    fr, en = load(data, "dev_fr.jsonl"), load(data, "dev_en.jsonl")
    sets = {"frt": [r for r in fr if not is_review(r)], "frr": [r for r in fr if is_review(r)], "en": en}
    fast, accurate = FastScorer(), EmbeddingScorer()
    # Probabilities of both tiers once per set (in the service's batch size), then every policy is replayed
    # with the same routing code the scorer uses: exactly what CascadeScorer computes, batch by batch.
    items = {k: [ScoreInput(r["text"]) for r in rows] for k, rows in sets.items()}
    pf = {k: fast.predict_proba(v) for k, v in items.items()}
    pa = {k: accurate.predict_proba(v) for k, v in items.items()}
    langs = {k: [language_of(i.text, None) for i in v] for k, v in items.items()}
    gold = {k: [r["label"] for r in rows] for k, rows in sets.items()}
    weight = CascadePolicy().fast_weight
    print(f"dev sets from {data}; fast {fast.model_version}, accurate {accurate.model_version}; language detected "
          f"({sum(g != 'fr' for g in langs['frt'] + langs['frr'])} FR texts detected as another language, "
          f"{sum(g != 'en' for g in langs['en'])} EN texts); fast_weight {weight}")
    print(f"{'scorer':18s} {'FR tw F1':>8s} {'FR negR':>8s} {'FR rev':>7s} {'EN F1':>6s} {'EN negR':>8s} {'escal.':>7s}"
          f"   on escalated: F1 avg vs accurate-only (FR tw / EN)")

    def row(name: str, proba: dict[str, np.ndarray], escalated: dict[str, list[int]] | None) -> None:
        pred = {k: [CLASSES[j] for j in p.argmax(axis=1)] for k, p in proba.items()}
        review_acc = sum(g == p for g, p in zip(gold["frr"], pred["frr"], strict=True)) / len(gold["frr"])
        line = (f"{name:18s} {macro_f1(gold['frt'], pred['frt']):8.3f} "
                f"{recall(gold['frt'], pred['frt'], 'negative'):8.3f} {review_acc:7.3f} "
                f"{macro_f1(gold['en'], pred['en']):6.3f} "
                f"{recall(gold['en'], pred['en'], 'negative'):8.3f}")
        if escalated is not None:
            n = sum(len(v) for v in escalated.values())
            line += f" {n / sum(len(v) for v in gold.values()):7.1%}  "
            for k in ("frt", "en"):
                idx = escalated[k]
                if len(idx) < 10:
                    line += f" {k}: n={len(idx)}"
                    continue
                g = [gold[k][i] for i in idx]
                avg = [CLASSES[j] for j in proba[k][idx].argmax(axis=1)]
                acc_only = [CLASSES[j] for j in pa[k][idx].argmax(axis=1)]
                line += f" {k}: n={len(idx)} {macro_f1(g, avg):.3f} vs {macro_f1(g, acc_only):.3f}"
        print(line, flush=True)

    row("fast", pf, None)
    row("accurate", pa, None)
    for w in (0.3, 0.5):
        row(f"average w={w}", {k: combine(pf[k], pa[k], w) for k in pf}, None)
    for name, unsure, negative in CURVE:
        policy = CascadePolicy(unsure_below=unsure, negative_at=negative)
        proba, escalated = {}, {}
        for k in pf:
            out = pf[k].copy()
            picked = [i for i, r in enumerate(route(out, [0] * len(out), policy)) if r is not None]
            out[picked] = combine(pf[k][picked], pa[k][picked], policy.fast_weight)
            proba[k], escalated[k] = out, picked
        row(name, proba, escalated)


if __name__ == "__main__":
    main()
