"""Scores the hand-written brand-style smoke set (bench/data/brand_smoke.jsonl) with each scorer, side by side.

Prints, per scorer, how many of the smoke comments get the label a community manager would expect, by kind
(question, complaint, praise, sarcasm, slang, emoji), then every disagreement. Usage:
    python bench/bench_brand_smoke.py [scorer ...]      (default: lexicon fast cascade)
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from services.sentiment.scoring import ScoreInput, make_scorer

DATA = Path(__file__).parent / "data" / "brand_smoke.jsonl"


def main() -> None:
    names = sys.argv[1:] or ["lexicon", "fast", "cascade"]
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    kinds = sorted({r["kind"] for r in rows})
    print(f"{'scorer':<10} {'right':>7}  " + "  ".join(f"{k:>10}" for k in kinds))
    misses: list[str] = []
    for name in names:
        scorer = make_scorer(name)
        out = scorer.score_batch([ScoreInput(r["text"], r["lang"]) for r in rows])
        right: Counter[str] = Counter()
        total: Counter[str] = Counter(r["kind"] for r in rows)
        for r, s in zip(rows, out, strict=True):
            if s.label.value == r["label"]:
                right[r["kind"]] += 1
            else:
                misses.append(f"{name:<10} expected {r['label']:<8} got {s.label.value:<8} {r['text']}")
        cells = "  ".join(f"{right[k]:>6}/{total[k]:<3}" for k in kinds)
        print(f"{name:<10} {sum(right.values()):>3}/{len(rows):<3}  {cells}")
    print("\ndisagreements:")
    print("\n".join(misses))


if __name__ == "__main__":
    main()
