"""Every metric the escalation service exports."""

from prometheus_client import Counter, Gauge

INCIDENTS_OPENED = Counter(
    "terrain_escalation_incidents_opened_total",
    "Incidents opened, by the level they opened at (respond, moderate, human).",
    ["level"],
)
TRANSITIONS = Counter(
    "terrain_escalation_incident_transitions_total",
    "Incident lifecycle steps, by event (opened, updated, escalated, acknowledged, resolved).",
    ["event"],
)
COMMENTS = Counter(
    "terrain_escalation_comments_total",
    "Scored comments decided, by decision (opened, attached, escalated, counted, duplicate, ignored).",
    ["decision"],
)
OPEN_INCIDENTS = Gauge(
    "terrain_escalation_open_incidents",
    "Incidents not yet resolved, by level; refreshed from the database every few seconds.",
    ["level"],
)
