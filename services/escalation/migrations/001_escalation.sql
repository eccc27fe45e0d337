-- Incidents, the comments attached to them and their audit timeline.
CREATE TABLE IF NOT EXISTS escalation_incidents (
    id                  text        PRIMARY KEY,
    community_id        text        NOT NULL,
    thread_id           text        NOT NULL,
    level               text        NOT NULL,
    reason              text        NOT NULL,
    state               text        NOT NULL,
    opened_at           timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    acknowledged_at     timestamptz,
    resolved_at         timestamptz,
    comment_count       int         NOT NULL DEFAULT 0,
    negative_count      int         NOT NULL DEFAULT 0,
    recommended_actions jsonb       NOT NULL DEFAULT '[]'::jsonb,
    -- The most recent evidence as published in snapshots; the full list is escalation_incident_comments.
    recent_evidence     jsonb       NOT NULL DEFAULT '[]'::jsonb,
    place               text,
    -- The policy frozen when the incident opened, so later setting changes do not alter running escalations.
    cascade_threshold   int         NOT NULL,
    ack_deadline_s      double precision NOT NULL,
    escalated_at        timestamptz,
    ack_deadline        timestamptz,
    -- Number of timeline entries: orders them and makes lifecycle message ids deterministic.
    seq                 int         NOT NULL DEFAULT 0,
    CONSTRAINT escalation_incidents_state CHECK (state IN ('open', 'acknowledged', 'resolved')),
    CONSTRAINT escalation_incidents_level CHECK (level IN ('respond', 'moderate', 'human', 'field'))
);
-- At most one incident still in progress per thread; later comments attach to it.
CREATE UNIQUE INDEX IF NOT EXISTS escalation_incidents_one_open_per_thread
    ON escalation_incidents (community_id, thread_id) WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS escalation_incidents_community_updated
    ON escalation_incidents (community_id, updated_at DESC);
CREATE INDEX IF NOT EXISTS escalation_incidents_updated ON escalation_incidents (updated_at DESC);

CREATE TABLE IF NOT EXISTS escalation_incident_comments (
    incident_id        text        NOT NULL REFERENCES escalation_incidents (id) ON DELETE CASCADE,
    comment_id         text        NOT NULL,
    community_id       text        NOT NULL,
    thread_id          text        NOT NULL,
    external_id        text        NOT NULL,
    label              text        NOT NULL,
    score              double precision NOT NULL,
    flags              text[]      NOT NULL DEFAULT '{}',
    -- Evidence of the problem (negative or breaking the charter), as opposed to a comment only counted.
    is_evidence        boolean     NOT NULL,
    comment_created_at timestamptz NOT NULL,
    attached_at        timestamptz NOT NULL,
    message_id         text        NOT NULL,
    PRIMARY KEY (incident_id, comment_id)
);
CREATE INDEX IF NOT EXISTS escalation_incident_comments_by_comment
    ON escalation_incident_comments (community_id, comment_id);

CREATE TABLE IF NOT EXISTS escalation_incident_events (
    incident_id text        NOT NULL REFERENCES escalation_incidents (id) ON DELETE CASCADE,
    seq         int         NOT NULL,
    at          timestamptz NOT NULL,
    event       text        NOT NULL,
    actor       text        NOT NULL,
    detail      text        NOT NULL,
    PRIMARY KEY (incident_id, seq)
);
