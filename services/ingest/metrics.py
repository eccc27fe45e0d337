"""Every metric the ingest service (and `terrain import`) exports; labels come from small fixed sets."""

from prometheus_client import Counter, Gauge, Histogram

# channel: http, topic, webhook, import
RECEIVED = Counter(
    "terrain_ingest_received_total",
    "Comments (or Meta changes) received, before any decision, by channel.",
    ["channel"],
)
COMMENTS = Counter(
    "terrain_ingest_comments_total",
    "Comments decided, by channel and outcome (created, edited, removed, duplicate, stale: an edit older than "
    "the version already applied).",
    ["channel", "outcome"],
)
ACCEPTED = Counter(
    "terrain_ingest_accepted_total",
    "Comments accepted and published (created, edited or removed), by channel.",
    ["channel"],
)
DUPLICATES = Counter(
    "terrain_ingest_duplicates_total",
    "Comments dropped as already published (retries, re-imports, the same comment from two paths), by channel.",
    ["channel"],
)
REJECTED = Counter(
    "terrain_ingest_rejected_total",
    "Comments or requests refused, by channel and reason (invalid, empty_text, unknown_source, malformed_json, "
    "too_large, unsupported, future_timestamp, out_of_scope, bad_signature).",
    ["channel", "reason"],
)
TRUNCATED = Counter(
    "terrain_ingest_truncated_total",
    "Comments whose text was cut to the length limit (kept and flagged, never dropped), by channel.",
    ["channel"],
)
PUBLISH_LATENCY = Histogram(
    "terrain_ingest_publish_latency_seconds",
    "From receipt (request or batch) to the broker's acknowledgement of the published comments, by channel.",
    ["channel"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
META_SIGNALS = Counter(
    "terrain_ingest_meta_signals_total",
    "Meta changes that are not comments (reactions, likes, shares, posts, mentions, other), counted and ignored.",
    ["kind"],
)
DEDUP_PRUNED = Counter(
    "terrain_ingest_dedup_pruned_total",
    "Content hashes of dedup records pruned by retention (older than TERRAIN_INGEST_DEDUP_RETENTION_DAYS); "
    "the comment's compact row stays.",
)
DEDUP_OLDEST_AGE = Gauge(
    "terrain_ingest_dedup_oldest_age_seconds",
    "Age of the oldest content hash still kept after the last retention pass (stays near the retention window).",
)
KNOWN_COMMENTS = Gauge(
    "terrain_ingest_known_comments",
    "Comments ingest remembers (one compact row each, kept for good), as PostgreSQL estimates it after the last "
    "retention pass: grows with distinct comments, not with retries, edits or replays.",
)
