-- One row per comment ingest has seen: what makes a repost a duplicate and a changed text an edit.
CREATE TABLE IF NOT EXISTS ingest_comments (
    comment_id    text        PRIMARY KEY,
    source        text        NOT NULL,
    external_id   text        NOT NULL,
    community_id  text        NOT NULL,
    content_hash  text        NOT NULL,
    revision      int         NOT NULL DEFAULT 1,
    removed       boolean     NOT NULL DEFAULT false,
    first_seen_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL
);
