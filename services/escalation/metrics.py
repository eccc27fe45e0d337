"""Every metric the escalation service exports."""

from prometheus_client import Counter, Gauge, Histogram

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

NOTIFICATIONS = Counter(
    "terrain_escalation_notifications_total",
    "Notification sends, by notifier kind (webhook, email, other) and outcome (sent, retry, failed).",
    ["kind", "outcome"],
)
NOTIFICATION_SEND_SECONDS = Histogram(
    "terrain_escalation_notification_send_seconds",
    "Time of one notification send, whatever its outcome, by notifier kind.",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
NOTIFICATIONS_PENDING = Gauge(
    "terrain_escalation_notifications_pending",
    "Notifications not yet sent or failed (pending or being sent); refreshed by the delivery loop.",
)
ESCALATIONS = Counter(
    "terrain_escalation_escalations_total",
    "Escalations published, by target (human, field) and trigger (cascade, spike, ack_timeout, repeat, "
    "persisted, grew_after_ack, place, policy_end).",
    ["target", "trigger"],
)
TIMERS = Counter(
    "terrain_escalation_timers_total",
    "Escalation timers taken when due, by kind (step, persist) and outcome (fired, stale).",
    ["kind", "outcome"],
)
SILENCES = Counter(
    "terrain_escalation_silences_total",
    "Silences created or expired through the API, by action.",
    ["action"],
)
PRUNED = Counter(
    "terrain_escalation_state_pruned_total",
    "Rows of per-comment and per-bucket detection state deleted after the retention window.",
)
POLICY_RELOADS = Counter(
    "terrain_escalation_policy_reloads_total",
    "Policy file reloads, by outcome (loaded, refused).",
    ["outcome"],
)
