-- The notification log: one row per (escalation step, channel, recipient), so a restart never resends.
CREATE TABLE IF NOT EXISTS escalation_notifications (
    id              text        PRIMARY KEY,
    incident_id     text        NOT NULL,
    channel         text        NOT NULL,
    kind            text        NOT NULL,
    target          text        NOT NULL,
    subject         text        NOT NULL,
    text            text        NOT NULL,
    payload         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    state           text        NOT NULL DEFAULT 'pending',
    -- Sends started; the value a sender claimed with is its fencing token when it records the outcome.
    attempts        int         NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    -- While state = 'sending': after this time the sender is presumed dead and the row is claimed again.
    lease_until     timestamptz,
    -- A status code or an exception class, never a message's text.
    last_error      text,
    created_at      timestamptz NOT NULL,
    sent_at         timestamptz,
    CONSTRAINT escalation_notifications_state CHECK (state IN ('pending', 'sending', 'sent', 'failed'))
);
-- The two halves of the due query, each a small partial index (sent and failed rows are most of the table).
CREATE INDEX IF NOT EXISTS escalation_notifications_due
    ON escalation_notifications (next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS escalation_notifications_leased
    ON escalation_notifications (lease_until) WHERE state = 'sending';
-- The incident detail API lists an incident's notifications.
CREATE INDEX IF NOT EXISTS escalation_notifications_incident
    ON escalation_notifications (incident_id, created_at);
