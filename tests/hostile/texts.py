"""Hostile comment texts for the text rules: long runs of the characters a pattern repeats, near-misses of the
words it looks for, and mixed scripts, at any length (shared by the linear-time tests and the worst-case bench)."""

from __future__ import annotations

import re
from collections.abc import Iterator

# One character for each class a pattern may repeat, and a few scripts the patterns do not expect.
CLASS_SAMPLES = {
    "d": "1", "w": "a", "s": " ", "S": "x", "D": "x", "W": "!", "b": " ",
}
MIXED_SCRIPTS = "é Ж 你 😡 ’ \u200d ١ "
BASE_CHARS = "a1 .,-+@/:'!?€$#_\n"


def _literals(pattern: str) -> tuple[set[str], list[str]]:
    """The characters a pattern names, and its literal words (three letters or more): what it repeats and what
    it looks for."""
    chars: set[str] = set()
    for m in re.finditer(r"\\([dwsSDWb])", pattern):
        chars.add(CLASS_SAMPLES[m.group(1)])
    unescaped = re.sub(r"\\[dwsSDWbAZ]", " ", pattern)
    for ch in unescaped:
        if ch.isprintable() and ch not in "()[]{}|*+?^$\\":
            chars.add(ch)
    words = sorted({w for w in re.findall(r"[^\W\d_][\w']{2,}", re.sub(r"\\s[*+]?", " ", pattern))})
    return chars, words


def motifs(pattern: str, *, max_words: int = 40) -> Iterator[tuple[str, str]]:
    """(name, motif): short strings whose repetition makes a backtracking pattern slow if anything will."""
    chars, words = _literals(pattern)
    chars |= set(BASE_CHARS)
    ordered = sorted(chars)
    for ch in ordered:
        yield f"run {ch!r}", ch
    # A character of the pattern between runs of another: digit-space, letter-dash, letter-at...
    for a in ordered:
        for b in ("1", "a", " ", ".", "@", "-", "/"):
            if a != b:
                yield f"pair {a!r}{b!r}", a + b
    for w in words[:max_words]:
        yield f"word {w!r}", w + " "
        yield f"near-miss {w[:-1]!r}", w[:-1] + " "
        yield f"glued {w!r}", w
    yield "mixed scripts", MIXED_SCRIPTS
    yield "digits and money", "1 000,00 "
    yield "link-ish", "a-b.c"
    yield "mail-ish", "a.b+c@d-e."


def repeat_to(motif: str, length: int) -> str:
    return (motif * (length // max(1, len(motif)) + 1))[:length]


def hostile_texts(pattern: str, length: int) -> Iterator[tuple[str, str]]:
    for name, motif in motifs(pattern):
        yield name, repeat_to(motif, length)



# Every module whose patterns read comment text (the linear-time tests and the worst-case bench read them all).
TEXT_RULE_MODULES = (
    "terrain.text",
    "services.sentiment.charter",
    "services.sentiment.scorers.language",
    "services.sentiment.scorers.lexicon",
    "services.sentiment.scorers.static",
    "services.sentiment.textnorm",
    "services.sentiment.hostility",
    "services.ingest.language",
)


def text_patterns() -> dict[str, re.Pattern[str]]:
    """Every compiled pattern (or word list's pattern) at module level in TEXT_RULE_MODULES, by dotted name."""
    import importlib

    found: dict[str, re.Pattern[str]] = {}
    seen: set[int] = set()  # a pattern imported by another module is tested once, under its own module's name
    for module_name in TEXT_RULE_MODULES:
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            pattern = value if isinstance(value, re.Pattern) else getattr(value, "pattern", None)
            if isinstance(pattern, re.Pattern) and isinstance(pattern.pattern, str) and id(pattern) not in seen:
                seen.add(id(pattern))
                found[f"{module_name}.{name}"] = pattern
    return found


def all_hostile_texts(length: int) -> dict[str, str]:
    """One text per distinct motif of every pattern, `length` characters each."""
    texts: dict[str, str] = {}
    for pattern in text_patterns().values():
        for _, motif in motifs(pattern.pattern):
            texts.setdefault(motif, repeat_to(motif, length))
    return texts
