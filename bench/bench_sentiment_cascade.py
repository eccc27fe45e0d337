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

import json
import sys
from pathlib import Path

import numpy as np

from services.sentiment.cascade import CascadePolicy, CascadeScorer, combine, route
from services.sentiment.embedding import CachedEmbedder, EmbeddingScorer, load_default_head
from services.sentiment.evaluation import evaluate
from services.sentiment.learned import CLASSES, FastScorer
from services.sentiment.scoring import ScoreInput, language_of

DATA = Path("/work/shared/data/sentiment")
BATCH = 1000
# (name, unsure_below, negative_at, max_escalated_share): the points of the trade-off curve.
CURVE = [
    ("cascade-2%", 0.6, 0.5, 0.02),
    ("cascade-5%", 0.6, 0.5, 0.05),
    ("cascade-10%", 0.6, 0.5, 0.10),
    ("cascade-30%", 0.7, 0.4, 0.30),
    ("cascade-uncapped", 0.7, 0.4, 1.0),
]


def accurate_uncached() -> EmbeddingScorer:
    head = load_default_head()
    return EmbeddingScorer(head, CachedEmbedder(prefix=head.prefix, cache_size=0))


def _cascade(share: float) -> CascadeScorer:
    return CascadeScorer(FastScorer(), accurate_uncached(), CascadePolicy(max_escalated_share=share),
                         record=lambda *_: None)


def cascade_2() -> CascadeScorer:
    return _cascade(0.02)


def cascade_5() -> CascadeScorer:
    return _cascade(0.05)


def cascade_10() -> CascadeScorer:
    return _cascade(0.10)


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
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else DATA
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
    for name, unsure, negative, share in CURVE:
        policy = CascadePolicy(unsure_below=unsure, negative_at=negative, max_escalated_share=share)
        proba, escalated = {}, {}
        for k in pf:
            out, chosen = pf[k].copy(), []
            for start in range(0, len(out), BATCH):
                part = slice(start, start + BATCH)
                picked = [start + i for i in route(out[part], [0] * len(out[part]), policy).escalated]
                out[picked] = combine(pf[k][picked], pa[k][picked], policy.fast_weight)
                chosen += picked
            proba[k], escalated[k] = out, chosen
        row(f"{name} ({unsure}/{negative})", proba, escalated)


if __name__ == "__main__":
    main()
