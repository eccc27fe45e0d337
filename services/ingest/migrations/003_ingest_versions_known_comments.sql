-- A comment is remembered for good: the retention prunes only its content hash (what tells a repost from an
-- edit), so a replayed Meta `add` months later is still a duplicate. `version_at` is the newest version
-- time applied (Meta's created_time of the change): an older edit is stale and changes nothing.
ALTER TABLE ingest_comments ALTER COLUMN content_hash DROP NOT NULL;
ALTER TABLE ingest_comments ADD COLUMN IF NOT EXISTS version_at timestamptz;
-- The retention walks only rows that still hold a hash: pruned rows accumulate and must not be re-read.
CREATE INDEX IF NOT EXISTS ingest_comments_hashed_last_seen_at ON ingest_comments (last_seen_at)
    WHERE content_hash IS NOT NULL;
DROP INDEX IF EXISTS ingest_comments_last_seen_at;
