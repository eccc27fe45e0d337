"""Every metric the sentiment service exports."""

from collections import Counter as Counts

from prometheus_client import Counter, Histogram

from services.sentiment.scorers.cascade import Reason

SCORED = Counter(
    "terrain_sentiment_scored_total",
    "Texts scored, by channel (topic, http), language (fr, en, other) and label (negative, neutral, positive).",
    ["channel", "lang", "label"],
)
FLAGS = Counter(
    "terrain_sentiment_flags_total",
    "Charter flags raised, by channel (topic, http) and kind (insult, hate, threat, spam, personal_data).",
    ["channel", "kind"],
)
REMOVALS = Counter(
    "terrain_sentiment_removals_total",
    "Removed comments forwarded without scoring.",
)
BATCH_SECONDS = Histogram(
    "terrain_sentiment_batch_seconds",
    "Time to score, flag and publish one consumed batch of comments.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CASCADE_ITEMS = Counter(
    "terrain_sentiment_cascade_items_total",
    "Texts the cascade scorer scored (all of them go through its fast tier).",
)
CASCADE_ESCALATED = Counter(
    "terrain_sentiment_cascade_escalated_total",
    "Texts the cascade sent to its accurate tier, by reason (reach, negative, unsure).",
    ["reason"],
)
CASCADE_OVER_BUDGET = Counter(
    "terrain_sentiment_cascade_over_budget_total",
    "Texts that qualified for the accurate tier but kept the fast tier's result: the accurate tier's budget "
    "(TERRAIN_SENTIMENT_ACCURATE_PER_SECOND) was spent.",
)


def record_cascade(items: int, escalated: Counts[Reason], over_budget: int) -> None:
    """The cascade scorer's recorder: its counts as Prometheus counters."""
    CASCADE_ITEMS.inc(items)
    for reason, n in escalated.items():
        CASCADE_ESCALATED.labels(reason=reason.value).inc(n)
    if over_budget:
        CASCADE_OVER_BUDGET.inc(over_budget)


def lang_bucket(lang: str) -> str:
    """Label value for a language: the two with a lexicon of their own, then the rest."""
    return lang if lang in ("fr", "en") else "other"
