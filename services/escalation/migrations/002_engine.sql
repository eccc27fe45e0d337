-- The escalation engine: frozen policies, paging steps with fenced timers, per-community state for
-- event-time windows and baselines, and silences.
ALTER TABLE escalation_incidents
    ALTER COLUMN cascade_threshold DROP NOT NULL,
    ALTER COLUMN ack_deadline_s DROP NOT NULL,
    ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'thread',
    -- The community's policy as it stood when the incident opened (JSON of CommunityPolicy).
    ADD COLUMN IF NOT EXISTS policy jsonb,
    ADD COLUMN IF NOT EXISTS language text NOT NULL DEFAULT 'en',
    ADD COLUMN IF NOT EXISTS source text,
    ADD COLUMN IF NOT EXISTS negatives_since_ack int NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS actions jsonb NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN IF NOT EXISTS step int NOT NULL DEFAULT 0,
    -- Bumped whenever who is paged changes; a timer carrying an older fence does nothing.
    ADD COLUMN IF NOT EXISTS step_fence int NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS field_requested_at timestamptz,
    ADD COLUMN IF NOT EXISTS reopened int NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS escalation_incidents_resolved_by_thread
    ON escalation_incidents (community_id, thread_id, resolved_at DESC) WHERE state = 'resolved';
CREATE INDEX IF NOT EXISTS escalation_incidents_open_by_community
    ON escalation_incidents (community_id) WHERE state <> 'resolved';

-- Every scored comment escalation has seen: sliding windows per thread and authors' history.
-- Pruned after the longest window it serves (see the retention setting).
CREATE TABLE IF NOT EXISTS escalation_comments (
    community_id  text        NOT NULL,
    comment_id    text        NOT NULL,
    thread_id     text        NOT NULL,
    -- A pseudonymous key (a hash of source and author id within the community), never the identity.
    author_key    text,
    created_at    timestamptz NOT NULL,
    sure_negative boolean     NOT NULL,
    score         double precision NOT NULL,
    removed       boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (community_id, comment_id)
);
CREATE INDEX IF NOT EXISTS escalation_comments_thread
    ON escalation_comments (community_id, thread_id, created_at);
CREATE INDEX IF NOT EXISTS escalation_comments_author
    ON escalation_comments (community_id, author_key, created_at) WHERE sure_negative;
CREATE INDEX IF NOT EXISTS escalation_comments_created ON escalation_comments (created_at);

-- Per-community counts per time bucket (event time): the baseline spikes are measured against.
CREATE TABLE IF NOT EXISTS escalation_buckets (
    community_id text        NOT NULL,
    bucket_s     int         NOT NULL,
    bucket_start timestamptz NOT NULL,
    comments     int         NOT NULL DEFAULT 0,
    negatives    int         NOT NULL DEFAULT 0,
    score_sum    double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (community_id, bucket_s, bucket_start)
);
CREATE INDEX IF NOT EXISTS escalation_buckets_start ON escalation_buckets (bucket_start);

CREATE TABLE IF NOT EXISTS escalation_communities (
    community_id text        PRIMARY KEY,
    first_seen   timestamptz NOT NULL
);

-- Deadlines of running escalations. Claimed with FOR UPDATE SKIP LOCKED and marked fired in the
-- transaction that acts, so each fires once across replicas; the fence makes a stale one a no-op.
CREATE TABLE IF NOT EXISTS escalation_timers (
    id          bigserial   PRIMARY KEY,
    incident_id text        NOT NULL REFERENCES escalation_incidents (id) ON DELETE CASCADE,
    kind        text        NOT NULL,
    due_at      timestamptz NOT NULL,
    fence       int         NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    fired_at    timestamptz,
    outcome     text,
    UNIQUE (incident_id, kind, fence),
    CONSTRAINT escalation_timers_kind CHECK (kind IN ('step', 'persist'))
);
CREATE INDEX IF NOT EXISTS escalation_timers_due ON escalation_timers (due_at) WHERE fired_at IS NULL;

CREATE TABLE IF NOT EXISTS escalation_silences (
    id          text        PRIMARY KEY,
    matchers    jsonb       NOT NULL,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    created_by  text        NOT NULL,
    comment     text        NOT NULL,
    created_at  timestamptz NOT NULL,
    expired_at  timestamptz,
    expired_by  text,
    CONSTRAINT escalation_silences_span CHECK (ends_at > starts_at)
);
