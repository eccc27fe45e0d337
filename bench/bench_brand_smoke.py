"""Scores the hand-written brand-style smoke set (bench/data/brand_smoke.jsonl) with each scorer, side by side.

Prints, per scorer: how many comments get the label a community manager would expect, by kind (question,
complaint, praise, sarcasm, slang, emoji, friendly...), macro-F1, and the false pages: comments a person
would call positive or neutral that the scorer labels negative with a confidence at or above the escalation
respond floor (services/escalation/policy.py RespondRules.min_confidence), i.e. comments that would page
someone for nothing. Also the charter flags raised at or above the violation line on the smoke set (none is
expected: nothing in it breaks a charter). Then every disagreement. Usage:
    python bench/bench_brand_smoke.py [scorer ...]      (default: every scorer)
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from services.escalation.policy import RespondRules
from services.sentiment import charter
from services.sentiment.evaluation import evaluate
from services.sentiment.scorers import SCORER_NAMES, make_scorer
from services.sentiment.scorers.base import ScoreInput

DATA = Path(__file__).parent / "data" / "brand_smoke.jsonl"
FLOOR = RespondRules().min_confidence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scorers", nargs="*", metavar="scorer",
                        help=f"one of {', '.join(SCORER_NAMES)} (default: every scorer)")
    names = parser.parse_args().scorers or list(SCORER_NAMES)
    unknown = [n for n in names if n not in SCORER_NAMES]
    if unknown:
        parser.error(f"unknown scorer(s) {', '.join(unknown)}; known: {', '.join(SCORER_NAMES)}")
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    kinds = sorted({r["kind"] for r in rows})
    calm = sum(r["label"] != "negative" for r in rows)
    print(f"{len(rows)} comments ({calm} positive or neutral); respond floor {FLOOR}")
    print(f"{'scorer':<10} {'right':>7} {'macroF1':>8} {'false pages':>12}  " + "  ".join(f"{k:>10}" for k in kinds))
    misses: list[str] = []
    for name in names:
        scorer = make_scorer(name)
        out = scorer.score_batch([ScoreInput(r["text"], r["lang"]) for r in rows])
        right: Counter[str] = Counter()
        total: Counter[str] = Counter(r["kind"] for r in rows)
        pages = 0
        for r, s in zip(rows, out, strict=True):
            if s.label.value == r["label"]:
                right[r["kind"]] += 1
            else:
                page = r["label"] != "negative" and s.label.value == "negative" and s.confidence >= FLOOR
                pages += page
                misses.append(f"{name:<10} expected {r['label']:<8} got {s.label.value:<8} {s.confidence:.2f}"
                              f"{' PAGE' if page else '     '} {r['text']}")
        f1 = evaluate([r["label"] for r in rows], [s.label.value for s in out]).macro_f1
        cells = "  ".join(f"{right[k]:>6}/{total[k]:<3}" for k in kinds)
        print(f"{name:<10} {sum(right.values()):>3}/{len(rows):<3} {f1:8.3f} {pages:>8}/{calm:<3}  {cells}")
    flagged = [(r["text"], f) for r in rows for f in charter.flags_for(r["text"]) if f.confidence >= charter.VIOLATION]
    print(f"\ncharter flags at or above {charter.VIOLATION} on the smoke set: {len(flagged)}")
    for text, f in flagged:
        print(f"  {f.kind:<8} {f.confidence:.2f} {text}")
    print("\ndisagreements:")
    print("\n".join(misses))


if __name__ == "__main__":
    main()
