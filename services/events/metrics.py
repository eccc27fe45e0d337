"""Every metric the events service exports."""

from prometheus_client import Counter, Gauge, Histogram

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
TRANSITIONS = Counter(
    "terrain_events_transitions_total",
    "Lifecycle steps kept, by kind (field_visit, apero, …), status reached and action.",
    ["kind", "status", "action"],
)
CLOSED = Counter(
    "terrain_events_closed_total",
    "Events that reached done, by kind and result (success … worse, pending when not assessed).",
    ["kind", "result"],
)
ESCALATION_TO_VISIT = Histogram(
    "terrain_events_escalation_to_visit_seconds",
    "From a field escalation to its visit: to the date it is scheduled for (step=scheduled), or to when it"
    " took place (step=done).",
    ["step"],
    buckets=(3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400, 4 * 86400, 7 * 86400, 14 * 86400, 30 * 86400),
)
OPEN_VISITS = Gauge(
    "terrain_events_field_visits_open",
    "Field visits not yet done or cancelled, by status (requested, scheduled); refreshed from the database.",
    ["status"],
)
BY_RESULT = Gauge(
    "terrain_events_stored",
    "Stored events by kind and result; refreshed from the database.",
    ["kind", "result"],
)
IMPACT_ESTIMATES = Gauge(
    "terrain_events_impact_estimates",
    "Events whose latest impact estimate has this verdict (improved, worsened, no_detectable_effect,"
    " inconclusive), by kind; refreshed from the database.",
    ["kind", "verdict"],
)
IMPACT_REPORTS = Counter(
    "terrain_events_impact_reports_total",
    "Impact reports computed, by verdict.",
    ["verdict"],
)
IMPACT_LIMITATIONS = Counter(
    "terrain_events_impact_limitations_total",
    "Limitations found by impact reports (too_little_data, overlapping_events, no_comparison_group, …).",
    ["limitation"],
)
ENGAGEMENT_COMMENTS = Counter(
    "terrain_events_engagement_comments_total",
    "Scored comments consumed for engagement, by outcome (counted, redelivered, too_old).",
    ["outcome"],
)
ENGAGEMENT_FACTS = Gauge(
    "terrain_events_engagement_facts",
    "Per-comment engagement rows kept (bounded by the retention); refreshed from the database.",
)
ENGAGEMENT_PURGED = Counter(
    "terrain_events_engagement_purged_total",
    "Per-comment engagement rows dropped by the retention.",
)
