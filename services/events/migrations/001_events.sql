-- One row per in-real-life event or field visit, with its latest merged outcome.
CREATE TABLE IF NOT EXISTS events_log (
    id              text        PRIMARY KEY,
    community_id    text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('meetup', 'apero', 'field_visit', 'workshop', 'other')),
    title           text        NOT NULL,
    starts_at       timestamptz NOT NULL,
    ends_at         timestamptz,
    location        text,
    incident_id     text,
    attendees       int         CHECK (attendees >= 0),
    ambassadors_met int         CHECK (ambassadors_met >= 0),
    result          text        NOT NULL DEFAULT 'pending'
                                CHECK (result IN ('success', 'mixed', 'failure', 'cancelled', 'pending')),
    notes           text,
    origin          text        NOT NULL CHECK (origin IN ('http', 'topic', 'escalation')),
    escalation_id   text,
    recorded_at     timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
-- The list endpoint filters by community or incident and orders newest first.
CREATE INDEX IF NOT EXISTS events_log_community_starts ON events_log (community_id, starts_at DESC, id);
CREATE INDEX IF NOT EXISTS events_log_starts ON events_log (starts_at DESC, id);
CREATE INDEX IF NOT EXISTS events_log_incident ON events_log (incident_id) WHERE incident_id IS NOT NULL;
