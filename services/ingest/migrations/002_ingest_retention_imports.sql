-- Retention walks the dedup records by age; bulk imports keep a checkpoint to resume after an interruption.
CREATE INDEX IF NOT EXISTS ingest_comments_last_seen_at ON ingest_comments (last_seen_at);

CREATE TABLE IF NOT EXISTS ingest_imports (
    import_key  text        PRIMARY KEY,  -- sha256 of the file's first MiB: the same file under any name
    path        text        NOT NULL,
    byte_offset bigint      NOT NULL,     -- where the next unread record starts
    line        bigint      NOT NULL,     -- lines read so far (for messages and the rejects file)
    accepted    bigint      NOT NULL DEFAULT 0,
    duplicates  bigint      NOT NULL DEFAULT 0,
    rejected    bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL
);
