"""Every metric the ingest service exports."""

from prometheus_client import Counter

COMMENTS = Counter(
    "terrain_ingest_comments_total",
    "Comments received, by channel (http, topic) and outcome (created, edited, removed, duplicate).",
    ["channel", "outcome"],
)
REJECTED = Counter(
    "terrain_ingest_rejected_total",
    "Comments refused as invalid, by channel (http answers 4xx; topic dead-letters).",
    ["channel"],
)
