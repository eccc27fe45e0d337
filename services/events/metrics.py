"""Every metric the events service exports."""

from prometheus_client import Counter

LOGGED = Counter(
    "terrain_events_logged_total",
    "Event writes that created or changed an event, by kind and channel (http, topic, escalation).",
    ["kind", "channel"],
)
UNCHANGED = Counter(
    "terrain_events_unchanged_total",
    "Event writes that changed nothing (a repost of what is stored), by channel (http, topic).",
    ["channel"],
)
REFUSED = Counter(
    "terrain_events_refused_total",
    "Event writes refused by the merge rules, by channel (http, topic) and reason (conflict, invalid).",
    ["channel", "reason"],
)
REDELIVERED = Counter(
    "terrain_events_redelivered_total",
    "Messages skipped because they were processed before, by stream (outcomes, escalations).",
    ["stream"],
)
ESCALATIONS = Counter(
    "terrain_events_escalations_total",
    "Escalations consumed, by target (human, field) and outcome (planned, already_planned, ignored).",
    ["target", "outcome"],
)
