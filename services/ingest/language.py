"""Language of a comment when its source does not say: py3langid, restricted to the languages our communities write.

Why py3langid (measured with `python bench/bench_ingest.py --lang`, short French comments from the
project's labelled sets, the seed article's reader comments and the brand smoke set): restricted to seven
European languages it named French right on 96% of comments up to 80 characters (n=319) and 88% of
comments up to 40 (n=94; 11% `und`, 1% another language), at about 35-65 µs a comment one by one on a
quiet core and three to four times less in ingest's batches of 100 (`detect_languages`), fully offline
and deterministic, with no new dependency (the sentiment service already ships it). lingua-language-detector
2.1 (high-accuracy mode, the same seven languages) scored 97% and 90% on the same sets, at three to four
times py3langid's CPU one by one (ten times ingest's batches) and 96 MB installed; its low-accuracy mode
scored 92% and 79%.
fastText-based detectors load their model from the network at first use, which this project does not allow.

How much evidence each answer needs (measured on the same sets): French, the first language of the
communities we serve, whenever it is the best guess; English from a probability of 0.3; any other language
from 0.7, below which a short French text more often than not was mislabelled Spanish or Italian. What the
detector cannot tell gets `und` (ISO 639-2 "undetermined"); the sentiment service then applies its own rule.
A threshold for French too (0.5) only turned right answers into `und` (fr named on 77% instead of 87% of
comments up to 40 characters).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np

from terrain.text import NOT_LANGUAGE

DETECTABLE_LANGS = ("fr", "en", "es", "de", "it", "pt", "nl")
UNDETERMINED = "und"
MIN_PROB = {"fr": 0.0, "en": 0.3}
MIN_PROB_OTHER = 0.7
# Only the opening of a long text is read: it is enough for the language and keeps detection cheap.
MAX_CHARS = 400

_TWO_LETTERS = re.compile(r"[^\W\d_].*?[^\W\d_]", re.DOTALL)


@functools.cache
def _identifier() -> Any:
    # Our own identifier instance, so restricting its languages does not touch py3langid's global one.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(list(DETECTABLE_LANGS))
    return ident


def warm_up() -> None:
    """Load the model and the batch tables now rather than at the first comment."""
    _tables()
    detect_languages(["warm up"] * _VECTOR_MIN_TEXTS)


def _clean(text: str) -> str | None:
    cleaned = " ".join(NOT_LANGUAGE.sub(" ", text[:MAX_CHARS]).split())
    return cleaned if _TWO_LETTERS.search(cleaned) is not None else None


def _label(lang: str, prob: float) -> str:
    return lang if prob >= MIN_PROB.get(lang, MIN_PROB_OTHER) else UNDETERMINED


# Below this many texts still being read, the batch walk hands the rest of each text to a Python loop: a
# numpy step costs about the same for 1 text as for 100, a Python step about a tenth of it per text.
_VECTOR_MIN_TEXTS = 8


@functools.cache
def _tables() -> tuple[Any, Any, Any]:
    """py3langid's tokenizer (a byte DFA) as numpy arrays, for walking many texts at once."""
    ident = _identifier()
    nextmove = np.frombuffer(ident.tk_nextmove, dtype=np.dtype(ident.tk_nextmove.typecode))
    return nextmove, np.asarray(ident._rowbase, dtype=np.intp), np.asarray(ident.tk_output, dtype=np.intp)


def _visits(datas: list[bytes]) -> tuple[Any, Any, Any]:
    """(text, feature, count) of the tokenizer's feature visits in every text, sorted by text then feature.

    The DFA is walked one byte position at a time for all texts together (texts sorted longest first,
    so the ones still being read are a prefix), while at least `_VECTOR_MIN_TEXTS` are; the longest
    texts then finish one by one in Python, from the state the batch walk left them in. The counts are
    those of py3langid's own `visit_counts`.
    """
    ident = _identifier()
    nextmove, rowbase, output = _tables()
    n_feats = len(ident.nb_ptc)
    n = len(datas)
    lengths = np.fromiter(map(len, datas), dtype=np.intp, count=n)
    order = np.argsort(-lengths, kind="stable")
    by_len = lengths[order]
    walked = int(by_len[_VECTOR_MIN_TEXTS - 1]) if n >= _VECTOR_MIN_TEXTS else 0
    keys = []
    state = np.zeros(n, dtype=np.intp)
    if walked:
        buf = np.zeros((n, walked), dtype=np.uint8)
        for r, i in enumerate(order.tolist()):
            head = datas[i][:walked]
            buf[r, : len(head)] = np.frombuffer(head, dtype=np.uint8)
        feats = np.full((n, walked), -1, dtype=np.intp)
        active = n
        for pos in range(walked):
            while by_len[active - 1] <= pos:
                active -= 1
            s = nextmove[rowbase[state[:active]] + buf[:active, pos]]
            state[:active] = s
            feats[:active, pos] = output[s]
        hit_rows, hit_pos = np.nonzero(feats >= 0)
        keys.append(order[hit_rows] * n_feats + feats[hit_rows, hit_pos])
    tail: list[int] = []
    nm, rb, out = ident.tk_nextmove, ident._rowbase, ident.tk_output
    for r in range(n):
        if by_len[r] <= walked:
            break
        i = int(order[r])
        st, base = int(state[r]), i * n_feats
        for letter in datas[i][walked:]:
            st = nm[rb[st] + letter]
            f = out[st]
            if f >= 0:
                tail.append(base + f)
    keys.append(np.array(tail, dtype=np.intp))
    uniq, counts = np.unique(np.concatenate(keys), return_counts=True)
    return uniq // n_feats, uniq % n_feats, counts


def detect_languages(texts: list[str]) -> list[str]:
    """`detect_language` for many texts, scored together: one matrix product instead of one per text.

    Same answers as py3langid's own `classify` (a unit test holds both to it): py3langid's tokenizer
    walked for the whole batch at once (`_visits`) and its naive-Bayes scoring done for the batch.
    Falls back to one `classify` per text if py3langid's model layout changes.
    """
    ident = _identifier()
    try:
        _tables()
        ptc, pc, classes, norm = ident.nb_ptc, ident.nb_pc, ident.nb_classes, ident._norm_probs
        aliases, encode = ident._alias_pairs, ident._encode
    except (AttributeError, ImportError, TypeError, ValueError):  # pragma: no cover - another py3langid layout
        return [detect_language(t) for t in texts]
    out = [UNDETERMINED] * len(texts)
    rows: list[int] = []
    datas: list[bytes] = []
    for i, text in enumerate(texts):
        cleaned = _clean(text)
        if cleaned is not None:
            rows.append(i)
            datas.append(encode(cleaned))
    if not rows:
        return out
    which, feats, counts = _visits(datas)
    scores = np.zeros((len(rows), len(classes)), dtype=np.float32)
    has = np.zeros(len(rows), dtype=bool)
    if len(feats):
        starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]])
        weighted = ptc[feats] * np.log1p(counts.astype(np.float32))[:, None]
        scores[which[starts]] = np.add.reduceat(weighted, starts, axis=0)
        has[which[starts]] = True
    scores[has] += pc
    if norm:
        lengths = np.fromiter(map(len, datas), dtype=np.float32, count=len(datas))
        scores *= (1.0 / np.sqrt(np.maximum(lengths, 1.0)))[:, None]
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
    for a, b in aliases:
        scores[:, a] += scores[:, b]
        scores[:, b] = 0.0
    best = scores.argmax(axis=1)
    for row, i, j in zip(rows, best.tolist(), range(len(rows)), strict=True):
        out[row] = _label(str(classes[i]), float(scores[j, i]))
    return out


def detect_language(text: str) -> str:
    """An ISO 639-1 code among DETECTABLE_LANGS, or `und` when the text gives too little to tell."""
    cleaned = _clean(text)
    if cleaned is None:
        return UNDETERMINED
    lang, prob = _identifier().classify(cleaned)
    return _label(str(lang), float(prob))
