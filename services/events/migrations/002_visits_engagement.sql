-- Field-visit lifecycle, richer events, engagement per community per day and impact estimates.

-- New kinds and results are added; every value 001 allowed stays valid.
ALTER TABLE events_log DROP CONSTRAINT IF EXISTS events_log_kind_check;
ALTER TABLE events_log ADD CONSTRAINT events_log_kind_check CHECK (
    kind IN ('meetup', 'apero', 'field_visit', 'workshop', 'other', 'ambassador_event', 'conference'));
ALTER TABLE events_log DROP CONSTRAINT IF EXISTS events_log_result_check;
ALTER TABLE events_log ADD CONSTRAINT events_log_result_check CHECK (
    result IN ('success', 'mixed', 'failure', 'cancelled', 'pending', 'resolved', 'improved', 'unchanged', 'worse'));

ALTER TABLE events_log
    ADD COLUMN IF NOT EXISTS status       text,
    ADD COLUMN IF NOT EXISTS organiser    text,
    ADD COLUMN IF NOT EXISTS follow_ups   jsonb,
    ADD COLUMN IF NOT EXISTS assignee     text,
    ADD COLUMN IF NOT EXISTS reason       text,
    ADD COLUMN IF NOT EXISTS evidence     jsonb NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN IF NOT EXISTS escalated_at timestamptz;

-- Events stored before the lifecycle existed: a planned visit not yet reported is requested; a
-- cancelled result is cancelled; a decided result, or a past start, is done; else scheduled.
UPDATE events_log SET
    status = CASE
        WHEN result = 'cancelled' THEN 'cancelled'
        WHEN origin = 'escalation' AND result = 'pending' THEN 'requested'
        WHEN result <> 'pending' OR starts_at <= now() THEN 'done'
        ELSE 'scheduled'
    END,
    reason = CASE WHEN origin = 'escalation' THEN notes END,
    escalated_at = CASE WHEN origin = 'escalation' THEN recorded_at END
WHERE status IS NULL;
ALTER TABLE events_log ALTER COLUMN status SET NOT NULL;
ALTER TABLE events_log ADD CONSTRAINT events_log_status_check CHECK (
    status IN ('requested', 'scheduled', 'done', 'cancelled'));
-- Open field visits are counted for the metrics and listed by status.
CREATE INDEX IF NOT EXISTS events_log_status ON events_log (status, starts_at DESC, id);

-- Every lifecycle step of every event, with who made it and when.
CREATE TABLE IF NOT EXISTS events_transitions (
    seq           bigserial   PRIMARY KEY,
    event_id      text        NOT NULL REFERENCES events_log (id) ON DELETE CASCADE,
    from_status   text,
    to_status     text        NOT NULL,
    action        text        NOT NULL,
    actor         text        NOT NULL,
    at            timestamptz NOT NULL,
    note          text,
    assignee      text,
    scheduled_for timestamptz
);
CREATE INDEX IF NOT EXISTS events_transitions_event ON events_transitions (event_id, seq);

-- One row per scored comment, keyed by comment id: a redelivered or re-scored comment replaces its
-- row instead of adding one. Rows older than the retention are purged; the daily rollup stays.
CREATE TABLE IF NOT EXISTS events_comment_facts (
    comment_id   text        PRIMARY KEY,
    community_id text        NOT NULL,
    day          date        NOT NULL,
    created_at   timestamptz NOT NULL,
    author_key   text,
    is_reply     boolean     NOT NULL,
    reactions    int         NOT NULL CHECK (reactions >= 0),
    label        text        NOT NULL CHECK (label IN ('negative', 'neutral', 'positive')),
    score        double precision NOT NULL CHECK (score BETWEEN -1 AND 1),
    removed      boolean     NOT NULL,
    revision     int         NOT NULL,
    scored_at    timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS events_comment_facts_community_day ON events_comment_facts (community_id, day);
CREATE INDEX IF NOT EXISTS events_comment_facts_day ON events_comment_facts (day);

-- Engagement per community per UTC day, derived from the facts (see services/events/engagement.py).
CREATE TABLE IF NOT EXISTS events_engagement_daily (
    community_id   text             NOT NULL,
    day            date             NOT NULL,
    comments       int              NOT NULL,
    unique_authors int              NOT NULL,
    replies        int              NOT NULL,
    reactions      bigint           NOT NULL,
    positive       int              NOT NULL,
    negative       int              NOT NULL,
    sentiment_sum  double precision NOT NULL,
    updated_at     timestamptz      NOT NULL,
    PRIMARY KEY (community_id, day)
);
CREATE INDEX IF NOT EXISTS events_engagement_daily_day ON events_engagement_daily (day);

-- The latest impact estimate of each event (for the metrics; the endpoint recomputes).
CREATE TABLE IF NOT EXISTS events_impact_estimates (
    event_id     text        PRIMARY KEY REFERENCES events_log (id) ON DELETE CASCADE,
    kind         text        NOT NULL,
    verdict      text        NOT NULL,
    estimate     double precision,
    ci_low       double precision,
    ci_high      double precision,
    computed_at  timestamptz NOT NULL
);
