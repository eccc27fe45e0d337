"""Charter flags (insult, identity-based hate, threat, spam, personal data) from rules and two small learned
models; pure, French and English.

The rules favour precision: a flag asks a community manager to hide a comment, so a missed flag costs
less than a wrong one. Confidence values are fixed per rule (documented at each rule) rather than
learned: they rank flags for a reviewer, they are not calibrated probabilities. The insult flag also
asks a small French hostility model, which finds the insults no word list holds; the hate flag asks an
identity-hate model (`hostility.py` holds both shapes); each model's cut-off lands on the violation line.
Which models are used is the caller's choice (`CharterModels`, built from the service's settings).
Evidence never shows personal data in clear: phone numbers, e-mail addresses and IBANs are masked.

`terrain.comments.scored.v1` knows four kinds (insult, threat, spam, personal_data): `to_contract` carries a
hate flag there as an insult flag with `category: "identity_hate"` and evidence starting with "hate:" (the
moderation is the same: hide it and say why; a reader that knows only the kinds still hides it). HTTP answers
and `terrain sentiment score` show "hate".
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import Field

from services.sentiment.hostility import DEFAULT_MODEL, HATE_MODEL, MODELS_DIR, HostilityModel
from services.sentiment.hostility import load as load_model
from terrain.contracts import CharterFlag
from terrain.contracts.base import Contract

log = logging.getLogger("terrain.sentiment")

MAX_EVIDENCE_ITEMS = 3
VIOLATION = 0.5  # escalation treats a flag at or above this confidence as a charter violation

FlagKind = Literal["insult", "hate", "threat", "spam", "personal_data"]


class Flag(Contract):
    """A charter flag as the service finds it; `to_contract` turns a list of them into the topic's flags."""

    kind: FlagKind
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: str | None = Field(default=None, description="What triggered the flag (masked for personal data).")

# --- personal data ------------------------------------------------------------------------------------

# French numbers: 0X XX XX XX XX, or +33 / 0033 with an optional "(0)", separated by spaces, dots or dashes.
_PHONE_FR = re.compile(r"(?<![\d+])(?:(?:\+|00)33[\s.-]?(?:\(0\)[\s.-]?)?|0)[1-9](?:[\s.-]?\d{2}){4}(?!\d)")
# Other international numbers: + country code and 7 to 13 more digits.
_PHONE_INTL = re.compile(r"(?<![\w+])\+(?!33)[1-9]\d{0,2}(?:[\s.-]?\d){7,13}(?!\d)")
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")
# Two letters, two check digits, then groups of four (spaced or not) and a shorter last group.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b", re.IGNORECASE)

PHONE_FR_CONFIDENCE = 0.9  # the French shapes are specific; order or tracking numbers rarely fit them
PHONE_INTL_CONFIDENCE = 0.8  # a leading + and 8+ digits is almost always a phone number
EMAIL_CONFIDENCE = 0.95
IBAN_CONFIDENCE = 0.97  # the mod-97 checksum leaves about one chance in a hundred for a random match


def iban_is_valid(candidate: str) -> bool:
    """ISO 13616 check: length 15-34 and the mod-97 checksum of the rearranged number equals 1."""
    iban = re.sub(r"\s", "", candidate).upper()
    if not 15 <= len(iban) <= 34 or not iban.isalnum() or not iban[:2].isalpha() or not iban[2:4].isdigit():
        return False
    digits = "".join(str(int(ch, 36)) for ch in iban[4:] + iban[:4])
    return int(digits) % 97 == 1


def _mask_digits(number: str) -> str:
    digits = re.sub(r"\D", "", number)
    prefix = "+" if number.startswith("+") else ""
    return prefix + digits[:2] + "*" * max(0, len(digits) - 4) + digits[-2:]


def _mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@***.{domain.rsplit('.', 1)[-1]}"


def _mask_iban(iban: str) -> str:
    compact = re.sub(r"\s", "", iban).upper()
    return compact[:4] + "*" * (len(compact) - 7) + compact[-3:]


# Cheap exact gates before the patterns, which scan the text from every position: a phone number, an IBAN or
# an amount holds a digit, an e-mail address an "@", a link a "/" or "www". Most comments hold none.
_DIGIT = re.compile(r"\d")


def personal_data(text: str) -> Flag | None:
    """Phone numbers, e-mail addresses and (checksum-valid) IBANs; evidence masked."""
    has_digit = _DIGIT.search(text) is not None
    if not has_digit and "@" not in text:
        return None
    ibans = [m for m in _IBAN.finditer(text) if iban_is_valid(m.group())] if has_digit else []
    found = [(IBAN_CONFIDENCE, "IBAN " + _mask_iban(m.group())) for m in ibans]
    # An IBAN's digits can look like a phone number: drop phone matches inside a valid IBAN.
    spans = [m.span() for m in ibans]
    for pattern, confidence in ((_PHONE_FR, PHONE_FR_CONFIDENCE), (_PHONE_INTL, PHONE_INTL_CONFIDENCE)):
        for m in pattern.finditer(text) if has_digit else ():
            if not any(a <= m.start() < b for a, b in spans):
                found.append((confidence, "phone " + _mask_digits(m.group())))
    for m in _EMAIL.finditer(text):
        found.append((EMAIL_CONFIDENCE, "e-mail " + _mask_email(m.group())))
    if not found:
        return None
    found.sort(key=lambda item: -item[0])  # stable: the strongest evidence first, text order within
    return Flag(
        kind="personal_data",
        confidence=max(c for c, _ in found),
        evidence=", ".join(e for _, e in found[:MAX_EVIDENCE_ITEMS]),
    )


# --- text normalisation for the word lists -------------------------------------------------------------


_STRETCHED = re.compile(r"(\w)\1{2,}")


def normalise(text: str) -> list[str]:
    """Lower case, accents folded, typographic apostrophes made plain, and two spellings of stretched
    letters ("connnnard" → "connard", "tuuuuer" → "tuer") so the word lists need one spelling each."""
    folded = text.replace("’", "'").replace("`", "'")
    if not folded.isascii():
        # The word lists are ASCII: decomposing and dropping what is not ASCII folds accents in C speed.
        folded = unicodedata.normalize("NFKD", folded).encode("ascii", "ignore").decode("ascii")
    folded = folded.lower()
    if _STRETCHED.search(folded) is None:
        return [folded]  # most texts: both spellings would be the same, and every pattern would read it twice
    return [_STRETCHED.sub(r"\1\1", folded), _STRETCHED.sub(r"\1", folded)]


def _alternation(words: Iterable[str]) -> str:
    """A regex alternation of words and phrases, longest first, any whitespace between a phrase's words."""
    escaped = (re.escape(w).replace(r"\ ", r"\s+") for w in words)
    return "|".join(sorted(escaped, key=len, reverse=True))


_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class WordList:
    """A word list's pattern, and a key word per term: the term's longest word. A term matches only where each
    of its words stands whole in the text, so a text holding no key word is not scanned (most comments; the
    scan, tried from every position of the text, cost more than the sentiment model's own arithmetic)."""

    pattern: re.Pattern[str]
    keys: frozenset[str]
    terms: tuple[str, ...]


def _terms(words: Iterable[str]) -> WordList:
    words = list(words)
    keys = {max(_WORD.findall(w), key=len, default="") for w in words}
    if "" in keys:
        raise ValueError("every term of a word list holds a letter or digit")
    return WordList(re.compile(r"(?<![\w])(?:" + _alternation(words) + r")(?![\w])"), frozenset(keys), tuple(words))


@functools.lru_cache(maxsize=1024)
def _words_of(variant: str) -> frozenset[str]:
    """The whole words of a normalised text, cached: each word list of the charter asks for them."""
    return frozenset(_WORD.findall(variant))


def _matches(pattern: re.Pattern[str] | WordList, variants: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for variant in variants:
        if isinstance(pattern, WordList):
            if pattern.keys.isdisjoint(_words_of(variant)):
                continue
            regex = pattern.pattern
        else:
            regex = pattern
        for m in regex.finditer(variant):
            seen.setdefault(re.sub(r"\s+", " ", m.group()), None)
    return list(seen)


# --- spam ---------------------------------------------------------------------------------------------

# Every repetition in the spam patterns is bounded (a domain label at most 63 characters, an amount at most 24
# between its first and last digit): tried from each position of a long run ("a-a-a-...", "1 1 1 ..."), an
# unbounded one rescanned the rest of the run each time, and 8,000 characters took a second.
_LINK = re.compile(
    r"https?://\S+|www\.\S+|\b[a-z0-9-]{1,63}\.(?:com|fr|net|org|io|ly|gl|me|xyz|info|biz|ru|cn|top|click|link|shop)/\S*",
    re.IGNORECASE,
)
_REPEATED = re.compile(r"(\S)\1{5,}")
_MONEY = re.compile(
    r"(?:[$€£]\s?\d[\d\s.,]{0,24}\d|\d[\d\s.,]{0,24}\s?(?:[$€£]|euros?|dollars?)(?![\w]))", re.IGNORECASE
)
_SCAM_TERMS = _terms([
    # French
    "gagnez", "gagner de l'argent", "gratuit", "gratuite", "gratuitement", "cliquez", "clique ici",
    "lien en bio", "offre exclusive", "offre limitee", "argent facile", "revenu passif", "revenus passifs",
    "investissez", "crypto", "cryptos", "bitcoin", "forex", "vous avez gagne", "code promo", "carte cadeau",
    "whatsapp", "telegram", "contactez moi", "contacte moi", "abonnez vous", "visitez mon profil",
    # English
    "free", "click here", "click the link", "link in bio", "you have won", "you won", "winner", "giveaway",
    "claim your", "limited offer", "make money", "earn money", "passive income", "investment", "dm me",
    "inbox me", "check my profile", "follow me", "gift card", "promo code",
])
SPAM_MIN_POINTS = 2.0


def spam(text: str, variants: list[str] | None = None) -> Flag | None:
    """Points: a link 1, each distinct scam term 1 (at most 3), an amount of money 0.5, a run of six or
    more identical characters 0.5. Two points flag it; confidence 0.3 + 0.15·points, at most 0.9
    (2 points → 0.6: a link and one scam word, or two scam words; 4 points → 0.9)."""
    variants = variants or normalise(text)
    terms = _matches(_SCAM_TERMS, variants)
    has_link = ("/" in text or "www" in text.lower()) and _LINK.search(text) is not None
    points = (1.0 if has_link else 0.0) + min(3, len(terms))
    points += 0.5 if _DIGIT.search(text) and _MONEY.search(text) else 0.0
    repeated = bool(_REPEATED.search(text))
    points += 0.5 if repeated else 0.0
    if points < SPAM_MIN_POINTS:
        return None
    reasons = ["link"] if has_link else []
    reasons += terms[:MAX_EVIDENCE_ITEMS] + (["repeated characters"] if repeated else [])
    confidence = round(min(0.9, 0.3 + 0.15 * points), 3)
    return Flag(kind="spam", confidence=confidence, evidence=", ".join(reasons))


# --- insults ------------------------------------------------------------------------------------------

# Vulgar insults aimed at a person whatever the context. Words with an innocent meaning in French or
# English ("retard" is a delay, "fdp" shipping costs, "guignol" Lyon's puppet, "jerk" a Jamaican dish)
# are left out or only count when said to someone.
# Slurs against a group (identity-based hate): no innocent sense in a brand comment ("raton" and "nègre"
# alone are left out: a raccoon, a ghostwriter). They are insults too.
_SLUR_WORDS = [
    "bougnoule", "bougnoules", "bougnoul", "bougnouls", "youpin", "youpins", "youpine", "bamboula", "bamboulas",
    "sale arabe", "sales arabes", "sale juif", "sale juive", "sales juifs", "sale pd", "sales pd", "sale noir",
    "sales noirs", "sale negre", "sales negres", "nigger", "niggers", "faggot", "faggots",
    "chinetoque", "chinetoques", "bicot", "bicots", "tarlouze", "tarlouzes",
]
_SLURS = _terms(_SLUR_WORDS)
_INSULTS_STRONG = _terms([
    "connard", "connards", "connasse", "connasses", "conasse", "salope", "salopes", "salaud", "salauds",
    "encule", "encules", "enculee", "fils de pute", "pute", "batard", "batards", "ta gueule",
    "ferme ta gueule", "nique ta mere", "ntm", "tocard", "tocards", "enfoire", "enfoires",
    "asshole", "assholes", "bitch", "bitches", "bastard", "bastards", "dickhead", "fuck you", "f*ck you",
    "motherfucker", "cunt", "piece of shit", "scumbag",
    *_SLUR_WORDS,
])
# Words that insult a person but also describe a situation ("c'est débile", "a stupid rule").
_MILD_WORDS = [
    "abruti", "abrutis", "abrutie", "cretin", "cretins", "cretine", "debile", "debiles", "idiot", "idiots",
    "idiote", "imbecile", "imbeciles", "bouffon", "bouffons", "minable", "minables", "boloss",
    "moron", "morons", "stupid", "dumb", "loser", "losers", "shut up",
]
# Words that are insults only when said to someone ("con" is also Spanish and Italian for "with").
_ADDRESSED_ONLY_WORDS = [
    "con", "conne", "connes", "fdp", "clown", "clowns", "guignol", "guignols", "jerk",
]
_INSULTS_MILD = _terms(_MILD_WORDS)
_ADDRESS = _alternation([
    "t'es", "tu es", "vous etes", "t'etes", "espece de", "espece d'", "bande de", "bande d'", "sale", "sales",
    "pauvre", "gros", "grosse", "quel", "quelle", "you are", "you're", "youre", "ur", "you", "such a",
    "such an", "what a", "what an",
])
# Words that may sit between the address and the insult: "t'es vraiment un gros con", "you stupid idiot".
_FILLER = _alternation([
    "un", "une", "des", "vraiment", "trop", "grand", "gros", "grosse", "sacre", "sombre", "pauvre", "vieux",
    "vieille", "petit", "petite", "a", "an", "such", "total", "complete", "real", "fucking", "bloody",
    "big", "little", "stupid", "really",
])
_INSULTS_ADDRESSED = re.compile(
    rf"(?<![\w'])(?:{_ADDRESS})\s*(?:(?:{_FILLER})\s+){{0,3}}"
    + "(?:" + _alternation(_MILD_WORDS + _ADDRESSED_ONLY_WORDS) + r")(?![\w])"
)
INSULT_STRONG_CONFIDENCE = 0.9
INSULT_ADDRESSED_CONFIDENCE = 0.75  # a mild word said to someone: "t'es débile", "you idiot"
INSULT_MILD_CONFIDENCE = 0.4  # a mild word alone: often about a situation; below the usual 0.5 cut-off


class _Packaged:
    """Marker for "the hostility model shipped in the package" (None means rules only)."""


PACKAGED: Final = _Packaged()
MODEL_MAX_CONFIDENCE = 0.85  # the model alone never outranks a vulgar insult found verbatim (0.9)
MILD_AGREED_CONFIDENCE = 0.6  # a mild word, and the model leans hostile: said to hurt, not about a situation
MILD_AGREE_PROBABILITY = 0.5


@functools.cache
def packaged_hostility() -> HostilityModel | None:
    """The shipped hostility model, loaded once; without its files the insult flag falls back to the rules."""
    return _load_packaged(DEFAULT_MODEL)


@functools.cache
def packaged_hate() -> HostilityModel | None:
    """The shipped identity-hate model, loaded once; without its files the hate flag uses the slur list only."""
    return _load_packaged(HATE_MODEL)


def _load_packaged(name: str) -> HostilityModel | None:
    try:
        return load_model(MODELS_DIR, name)
    except FileNotFoundError:
        log.warning("charter model %s not found: its flag falls back to the rules", name)
        return None


@dataclass(frozen=True)
class CharterModels:
    """The learned models the flags use; None: that flag uses its rules only."""

    hostility: HostilityModel | None
    hate: HostilityModel | None


RULES_ONLY = CharterModels(hostility=None, hate=None)


def charter_models(use_models: bool) -> CharterModels:
    """The shipped models, or none (the service's `sentiment_hostility_model` setting: their training data
    carries research-only terms; the rules carry none)."""
    if not use_models:
        log.info("charter models turned off: insult and hate flags from rules only")
        return RULES_ONLY
    return CharterModels(hostility=packaged_hostility(), hate=packaged_hate())


def model_confidence(probability: float, threshold: float) -> float:
    """Map the model's probability to a flag confidence: its cut-off lands on 0.5 (a violation), certainty on
    0.85, and anything below the cut-off stays under 0.5, so the model alone flags only past its cut-off."""
    if probability >= threshold:
        return round(VIOLATION + (MODEL_MAX_CONFIDENCE - VIOLATION) * (probability - threshold) / (1 - threshold), 3)
    return round(VIOLATION * probability / threshold, 3)


def insult(
    text: str, variants: list[str] | None = None, hostility: HostilityModel | _Packaged | None = PACKAGED
) -> Flag | None:
    """Rules and model together; the rules are precise, the model finds what the word lists miss.

    - a vulgar insult (0.9) or a mild word said to someone (0.75): the rule stands, the model can only raise it;
    - a mild word alone (0.4, "c'est débile"): 0.6 when the model leans hostile (p >= 0.5), else 0.4;
    - no rule: a flag only when the model passes its cut-off (confidence 0.5 to 0.85), with the words that
      weighed most as evidence.
    """
    variants = variants or normalise(text)
    model = packaged_hostility() if isinstance(hostility, _Packaged) else hostility
    probability = model.probability(text) if model is not None else 0.0
    learned = model_confidence(probability, model.threshold) if model is not None else 0.0
    for pattern, confidence in ((_INSULTS_STRONG, INSULT_STRONG_CONFIDENCE),
                                (_INSULTS_ADDRESSED, INSULT_ADDRESSED_CONFIDENCE),
                                (_INSULTS_MILD, INSULT_MILD_CONFIDENCE)):
        hits = _matches(pattern, variants)
        if hits:
            if confidence == INSULT_MILD_CONFIDENCE and probability >= MILD_AGREE_PROBABILITY:
                confidence = MILD_AGREED_CONFIDENCE
            return Flag(kind="insult", confidence=max(confidence, learned),
                               evidence=", ".join(hits[:MAX_EVIDENCE_ITEMS]))
    if model is None or learned < VIOLATION:
        return None
    words = model.drivers(text, MAX_EVIDENCE_ITEMS)
    return Flag(kind="insult", confidence=learned,
                       evidence=f"hostility model {probability:.2f}" + (": " + ", ".join(words) if words else ""))


# --- threats ------------------------------------------------------------------------------------------

_YOU = r"(?:te|t'|vous|toi)"
_HARM_FR = r"(?:tuer|buter|defoncer|egorger|crever|cramer|bruler|frapper|tabasser|massacrer|casser la gueule)"
# Places a threat names; "mettre le feu" alone is also "to get the party going".
_PLACE = r"(?:restaurant|resto|magasin|boutique|bureau|local|locaux|maison|voiture|batiment|usine|salle|bar)"
_THREATS_EXPLICIT = re.compile("|".join([
    rf"\b(?:je|j'|on|nous)\s*(?:vais|va|allons|vas)\s+{_YOU}\s*{_HARM_FR}",
    rf"\b(?:je|j'|on)\s*{_YOU}\s*(?:tuerai|buterai|defoncerai|tuera|butera|defoncera)\b",
    r"\b(?:tu vas|vous allez)\s+(?:crever|mourir)\b",
    rf"\b(?:mettre|foutre)\s+le\s+feu\s+(?:a|au|aux)\s+(?:\w+\s+|l')?{_PLACE}",
    rf"\bfaire\s+sauter\s+(?:\w+\s+|l')?{_PLACE}",
    r"\bi(?:'ll| will|'m going to| am going to|'m gonna| am gonna)\s+(?:kill|hurt|stab)\b",
    r"\b(?:kill|stab)\s+(?:you|u|yourself)\b",
    r"\byou(?:'re| are)\s+dead\b",
    r"\bburn\s+(?:it|this place|your \w+)\s+down\b",
]))
_THREATS_VEILED = re.compile("|".join([
    r"\bje\s+sais\s+ou\s+(?:tu\s+(?:habites|vis|bosses|travailles)|vous\s+(?:habitez|vivez|travaillez))",
    r"\b(?:tu vas|vous allez)\s+(?:le\s+(?:payer|regretter)|regretter|payer\s+cher)\b",
    r"\bgare\s+a\s+(?:toi|vous)\b",
    r"\bi\s+know\s+where\s+you\s+(?:live|work)\b",
    r"\bwatch\s+your\s+back\b",
    r"\byou(?:'ll| will)\s+(?:pay\s+for\s+(?:this|that|it)|regret\s+(?:this|that|it))\b",
    r"\b(?:we|i)(?:'ll| will)\s+find\s+you\b",
]))
THREAT_EXPLICIT_CONFIDENCE = 0.85  # names violence against the reader or a place
THREAT_VEILED_CONFIDENCE = 0.65  # "je sais où tu habites": menacing, but also said in jest


def threat(text: str, variants: list[str] | None = None) -> Flag | None:
    variants = variants or normalise(text)
    for pattern, confidence in ((_THREATS_EXPLICIT, THREAT_EXPLICIT_CONFIDENCE),
                                (_THREATS_VEILED, THREAT_VEILED_CONFIDENCE)):
        hits = _matches(pattern, variants)
        if hits:
            evidence = ", ".join(hits[:MAX_EVIDENCE_ITEMS])
            return Flag(kind="threat", confidence=confidence, evidence=evidence)
    return None


# --- identity-based hate ------------------------------------------------------------------------------

HATE_SLUR_CONFIDENCE = 0.9  # a slur against a group, found verbatim
# The identity-hate model alone, on a comment the hostility model does not find hostile: shown for review,
# below the violation line (it keys on the mention of a group, so "les musulmans sont bienvenus" scores high).
HATE_UNCONFIRMED_CONFIDENCE = 0.45


def hate(text: str, variants: list[str] | None = None, model: HostilityModel | _Packaged | None = PACKAGED,
         hostility: HostilityModel | _Packaged | None = PACKAGED) -> Flag | None:
    """Identity-based hate: a slur against a group (0.9); else the identity-hate model past its cut-off, a
    violation (0.5 to 0.85) when the hostility model also finds the comment hostile (past its own cut-off),
    since identity-based hate is hostility aimed at a group, else a review hint at 0.45. A plain insult is
    not hate: that is the insult flag."""
    variants = variants or normalise(text)
    chosen = packaged_hate() if isinstance(model, _Packaged) else model
    slurs = _matches(_SLURS, variants)
    if slurs:
        return Flag(kind="hate", confidence=HATE_SLUR_CONFIDENCE, evidence=", ".join(slurs[:MAX_EVIDENCE_ITEMS]))
    if chosen is None:
        return None
    probability = chosen.probability(text)
    if probability < chosen.threshold:
        return None
    hostile = packaged_hostility() if isinstance(hostility, _Packaged) else hostility
    confirmed = hostile is None or hostile.probability(text) >= hostile.threshold
    confidence = model_confidence(probability, chosen.threshold)
    words = chosen.drivers(text, MAX_EVIDENCE_ITEMS)
    return Flag(kind="hate", confidence=confidence if confirmed else min(confidence, HATE_UNCONFIRMED_CONFIDENCE),
                evidence=f"hate model {probability:.2f}" + ("" if confirmed else " (not hostile)")
                + (": " + ", ".join(words) if words else ""))


def flags_for(text: str, hostility: HostilityModel | _Packaged | None = PACKAGED,
              hate_model: HostilityModel | _Packaged | None = PACKAGED) -> list[Flag]:
    """Every charter flag a text raises, at most one per kind, in a fixed order; None for a model: rules only."""
    variants = normalise(text)
    flags = (insult(text, variants, hostility), hate(text, variants, hate_model, hostility), threat(text, variants),
             spam(text, variants), personal_data(text))
    return [f for f in flags if f is not None]


def flags_with(models: CharterModels, text: str) -> list[Flag]:
    """`flags_for` with the models the service's settings chose."""
    return flags_for(text, models.hostility, models.hate)


IDENTITY_HATE: Final = "identity_hate"


def to_contract(flags: Sequence[Flag]) -> list[CharterFlag]:
    """The flags as `terrain.comments.scored.v1` carries them: a hate flag becomes an insult flag (evidence
    "hate: ...", `category` identity_hate), merged with the insult flag when there is one (the higher
    confidence), in the same order."""
    out: list[CharterFlag] = []
    for f in flags:
        if f.kind != "hate":
            out.append(CharterFlag(kind=f.kind, confidence=f.confidence, evidence=f.evidence))
            continue
        evidence = f"hate: {f.evidence}" if f.evidence else "hate"
        existing = next((i for i, g in enumerate(out) if g.kind == "insult"), None)
        if existing is None:
            out.insert(0, CharterFlag(kind="insult", confidence=f.confidence, evidence=evidence,
                                      category=IDENTITY_HATE))
        else:
            g = out[existing]
            # The category says what the confidence measures: hate's when it is the higher of the two.
            out[existing] = CharterFlag(kind="insult", confidence=max(g.confidence, f.confidence),
                                        evidence="; ".join(e for e in (evidence, g.evidence) if e),
                                        category=IDENTITY_HATE if f.confidence >= g.confidence else None)
    return out
