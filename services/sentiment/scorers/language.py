"""Which language a comment is in: the one its source gave, else py3langid restricted to a few European
languages, with French (the first language here) when the detector is unsure."""

from __future__ import annotations

import functools
from typing import Any

from terrain.text import NOT_LANGUAGE

DEFAULT_LANG = "fr"
# Languages the detector may answer; the set is small so that short texts are not labelled with some
# exotic language, and wide enough to tell an English or Spanish comment from a French one.
DETECTABLE_LANGS = ("fr", "en", "es", "de", "it", "pt", "nl")
# Below these detector probabilities the text is taken as French. English needs less evidence than the
# rest because it has models of its own; another language only changes the reported `lang`.
MIN_DETECT_PROB = {"en": 0.3}
MIN_DETECT_PROB_OTHER = 0.6

# Sources may give ISO 639-2 codes; "und" (undetermined) means they do not know.
_ISO_639_2 = {"eng": "en", "fra": "fr", "fre": "fr", "spa": "es", "deu": "de", "ger": "de", "ita": "it",
              "por": "pt", "nld": "nl", "dut": "nl"}


@functools.cache
def identifier() -> Any:
    """Our own identifier instance, so restricting its languages does not touch py3langid's global one."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(list(DETECTABLE_LANGS))
    return ident


def detect_language(text: str) -> str:
    """The language of a text among DETECTABLE_LANGS, or French when the detector is unsure."""
    # Links, mentions, hashtags' marks and numbers say nothing about the language and skew short texts.
    cleaned = " ".join(NOT_LANGUAGE.sub(" ", text).split())
    if not any(ch.isalpha() for ch in cleaned):
        return DEFAULT_LANG
    best, prob = identifier().classify(cleaned)
    lang = str(best)
    if lang == DEFAULT_LANG:
        return lang
    return lang if prob >= MIN_DETECT_PROB.get(lang, MIN_DETECT_PROB_OTHER) else DEFAULT_LANG


def language_of(text: str, given: str | None) -> str:
    """The given language (as a two-letter code when we know one), else the detected one."""
    if given and given != "und":
        return _ISO_639_2.get(given, given)
    return detect_language(text)
