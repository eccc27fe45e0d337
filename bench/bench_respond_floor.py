"""How sure must a negative be before it opens an incident? The curve behind the respond floor.

For each scorer, on the labelled dev sets (French, English) and the brand-style smoke set, prints the
precision and recall of the "negative" label among comments at or above each confidence floor, and
F0.5 (precision weighted twice recall: a false incident costs a community manager's time, a missed
lone complaint is caught by the next one). The floor proposed for a scorer maximises F0.5 on the
brand-style smoke set (closest to what a brand page sees; small, so ties are broken by the pooled dev
F0.5); the default policy's 0.5 is the lexicon scorer's. Usage:
    python bench/bench_respond_floor.py [lexicon fast ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from services.sentiment.scorers import SCORER_NAMES
from services.sentiment.scoring import ScoreInput, make_scorer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sentiment"
SMOKE = Path(__file__).resolve().parent / "data" / "brand_smoke.jsonl"
FLOORS = [0.0, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8]


def load(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def curve(scorer_name: str, rows: list[dict[str, str]]) -> list[tuple[float, float, float, float, int]]:
    scorer = make_scorer(scorer_name)
    out = scorer.score_batch([ScoreInput(text=r["text"], lang=r.get("lang"), reach=0) for r in rows])
    negatives = sum(r["label"] == "negative" for r in rows)
    flagged = [(s.confidence, r["label"] == "negative") for s, r in zip(out, rows, strict=True)
               if s.label.value == "negative"]
    points = []
    for floor in FLOORS:
        kept = [ok for c, ok in flagged if c >= floor]
        p = sum(kept) / len(kept) if kept else 0.0
        r = sum(kept) / negatives if negatives else 0.0
        f = 1.25 * p * r / (0.25 * p + r) if p + r else 0.0
        points.append((floor, p, r, f, len(kept)))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scorers", nargs="*", metavar="scorer",
                        help=f"one of {', '.join(SCORER_NAMES)} (default: lexicon fast)")
    names = parser.parse_args().scorers or ["lexicon", "fast"]
    unknown = [n for n in names if n not in SCORER_NAMES]
    if unknown:
        parser.error(f"unknown scorer(s) {', '.join(unknown)}; known: {', '.join(SCORER_NAMES)}")
    sets = {"dev_fr": DATA / "dev_fr.jsonl", "dev_en": DATA / "dev_en.jsonl", "brand_smoke": SMOKE}
    missing = [str(p) for p in sets.values() if not p.exists()]
    if missing:
        raise SystemExit(f"missing data: {', '.join(missing)}")
    loaded = {name: load(path) for name, path in sets.items()}
    for scorer in names:
        print(f"\n== {scorer}: negative precision / recall / F0.5 (n kept) by confidence floor")
        pooled = loaded["dev_fr"] + loaded["dev_en"]
        results = {name: curve(scorer, rows) for name, rows in (*loaded.items(), ("dev pooled", pooled))}
        print("floor  " + "  ".join(f"{name:>24s}" for name in results))
        for i, floor in enumerate(FLOORS):
            cells = [f"{p:.2f}/{r:.2f}/{f:.2f} ({n:4d})" for _, p, r, f, n in (results[k][i] for k in results)]
            print(f"{floor:5.2f}  " + "  ".join(f"{c:>24s}" for c in cells))
        smoke, dev = results["brand_smoke"], results["dev pooled"]
        best = max(range(len(FLOORS)), key=lambda i: (round(smoke[i][3], 2), dev[i][3]))
        print(f"proposed floor for {scorer}: {FLOORS[best]:.2f} (F0.5 {smoke[best][3]:.2f} on the smoke set, "
              f"{dev[best][3]:.2f} on pooled dev; precision there {dev[best][1]:.2f}, recall {dev[best][2]:.2f})")


if __name__ == "__main__":
    main()
