"""Worst-case scoring time per comment on hostile texts, and how late the event loop wakes while they are scored.

Builds one text per motif of every pattern that reads comment text (long runs of the characters each pattern
repeats, near-misses of its words, mixed scripts: tests/hostile/texts.py), at --chars characters, and times the
whole assessment the sentiment service runs on each (scorer + charter flags, the shipped models included),
beside an ordinary comment's time in the same run. Then scores them in a worker thread, as the service does,
while a loop-lag monitor runs on the event loop, and prints the largest lag. Usage:
    python bench/bench_hostile_text.py [--chars 8000] [--scorer lexicon] [--top 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.sentiment import charter
from services.sentiment.domain import assess
from services.sentiment.scorers import DEFAULT_SCORER, make_scorer
from services.sentiment.scorers.base import ScoreInput
from terrain.looplag import LoopLagMonitor
from tests.hostile.texts import all_hostile_texts, text_patterns

ORDINARY = "Service déplorable ce midi, 45 minutes d'attente et un plat froid. Je ne reviendrai pas !"


def time_one(fn, text: str, repeats: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - t0)
    return best


async def loop_lag_while(fn, texts: list[str]) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(largest lag, seconds of work): the texts scored in a worker thread in batches of 20, as the service does."""
    monitor = LoopLagMonitor("bench", interval_s=0.01)
    task = asyncio.create_task(monitor.run())
    t0 = time.perf_counter()
    for i in range(0, len(texts), 20):
        await asyncio.to_thread(lambda chunk: [fn(t) for t in chunk], texts[i:i + 20])
    spent = time.perf_counter() - t0
    task.cancel()
    return monitor.max_s, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=8000, help="length of each hostile text")
    parser.add_argument("--scorer", default=DEFAULT_SCORER)
    parser.add_argument("--top", type=int, default=10, help="how many of the slowest texts to list")
    parser.add_argument("--repeats", type=int, default=1, help="timings per text (the best is kept)")
    args = parser.parse_args()

    scorer = make_scorer(args.scorer)
    models = charter.charter_models(True)

    def whole(text: str) -> object:
        return assess(scorer, [ScoreInput(text)], lambda t: charter.flags_with(models, t))

    whole(ORDINARY)  # models loaded, caches warm
    texts = all_hostile_texts(args.chars)
    print(f"{len(text_patterns())} text patterns, {len(texts)} hostile texts of {args.chars:,} characters, "
          f"scorer {args.scorer} + charter flags (models on)")
    ordinary = time_one(whole, ORDINARY, 200)
    ordinary_long = time_one(whole, (ORDINARY + " ") * (args.chars // (len(ORDINARY) + 1)), 5)
    timings = sorted(((time_one(whole, t, args.repeats), motif) for motif, t in texts.items()), reverse=True)
    values = [t for t, _ in timings]
    print(f"ordinary comment ({len(ORDINARY)} chars): {ordinary * 1000:.2f} ms; the same repeated to "
          f"{args.chars:,} chars: {ordinary_long * 1000:.1f} ms")
    print(f"hostile texts: median {statistics.median(values) * 1000:.1f} ms, worst {values[0] * 1000:.1f} ms "
          f"(goal: under 50 ms at 8,000 characters)")
    for seconds, motif in timings[:args.top]:
        print(f"  {seconds * 1000:8.1f} ms  motif {motif[:40]!r}")
    worst_texts = [texts[m] for _, m in timings[:100]]
    lag, spent = asyncio.run(loop_lag_while(whole, worst_texts))
    print(f"event loop: largest lag {lag * 1000:.1f} ms while the {len(worst_texts)} slowest texts were scored in a "
          f"worker thread ({spent:.1f} s of work)")


if __name__ == "__main__":
    main()
