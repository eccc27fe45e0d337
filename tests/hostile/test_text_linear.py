"""Every pattern that reads comment text runs in linear time, whatever the text: long runs of the characters it
repeats, near-misses of its words, mixed scripts, at 8,000 and 50,000 characters.

A pattern that backtracks over a run from each of the run's positions takes time in the square of the length:
`_MONEY` took a second on 8,000 digits and forty on 50,000, holding the interpreter's lock all along. Linear
patterns take a few milliseconds on 50,000 characters here; the budget leaves a slower machine room, and a
quadratic pattern misses it by two orders of magnitude. The growth check compares 50,000 to 8,000 characters
(6.25x for linear work).
"""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hostile.texts import MIXED_SCRIPTS, _literals, motifs, repeat_to, text_patterns

SHORT, LONG = 8_000, 50_000
BUDGET_LONG_S = 0.25  # one pattern over 50,000 characters
MAX_GROWTH = 15.0  # time(50k) / time(8k); linear is 6.25, quadratic 39
NOISE_S = 0.005  # below this a ratio says nothing

PATTERNS = text_patterns()


def scan_time(pattern: re.Pattern[str], text: str, under: float = 0.0, tries: int = 3) -> float:
    """The best of up to `tries` scans, stopping at the first under `under`: a pause of a shared machine is
    not taken for the pattern's time, while a slow pattern is slow every time."""
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        for _ in pattern.finditer(text):
            pass
        best = min(best, time.perf_counter() - t0)
        if best <= under:
            break
    return best


def check_linear(name: str, pattern: re.Pattern[str], motif: str) -> None:
    # A quadratic pattern is caught on the short text already, without waiting the long one out.
    short_budget = BUDGET_LONG_S * SHORT / LONG * 2
    short = scan_time(pattern, repeat_to(motif, SHORT), under=short_budget)
    assert short <= short_budget, f"{name} on {motif!r} x {SHORT}: {short:.3f} s"
    long_ = scan_time(pattern, repeat_to(motif, LONG), under=NOISE_S)
    assert long_ <= BUDGET_LONG_S, f"{name} on {motif!r} x {LONG}: {long_:.3f} s"
    if long_ > NOISE_S and long_ / max(short, 1e-9) > MAX_GROWTH:
        short = scan_time(pattern, repeat_to(motif, SHORT), tries=5)
        long_ = scan_time(pattern, repeat_to(motif, LONG), tries=5)
        assert long_ / max(short, 1e-9) <= MAX_GROWTH, (
            f"{name} on {motif!r}: {short * 1000:.1f} ms at {SHORT}, {long_ * 1000:.1f} ms at {LONG}: superlinear")


def test_the_patterns_are_found() -> None:
    # The registry reads the modules: a renamed module must not leave its patterns untested.
    assert len(PATTERNS) >= 30
    assert any(name.endswith("charter._MONEY") for name in PATTERNS)
    assert any(name.endswith("charter._INSULTS_STRONG") for name in PATTERNS)


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pattern_is_linear_on_its_own_motifs(name: str) -> None:
    pattern = PATTERNS[name]
    for _, motif in motifs(pattern.pattern):
        check_linear(name, pattern, motif)


def _motif_strategy(pattern: re.Pattern[str]) -> st.SearchStrategy[str]:
    chars, words = _literals(pattern.pattern)
    alphabet = sorted(chars | set("a1 .-@/'") | set(MIXED_SCRIPTS))
    pieces = st.one_of(
        st.text(alphabet=alphabet, min_size=1, max_size=6),
        st.sampled_from(words or ["a"]).map(lambda w: w[: max(1, len(w) - 1)]),  # near-misses
        st.sampled_from(words or ["a"]),
    )
    return st.lists(pieces, min_size=1, max_size=4).map(lambda parts: " ".join(parts) if len(parts) > 2 else
                                                         "".join(parts))


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pattern_is_linear_on_drawn_motifs(name: str) -> None:
    pattern = PATTERNS[name]

    @settings(max_examples=5)
    @given(_motif_strategy(pattern))
    def run(motif: str) -> None:
        check_linear(name, pattern, motif)

    run()
