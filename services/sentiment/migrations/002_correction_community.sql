-- A correction belongs to its comment's community: the caller's scope decides who may make, list and export it.
-- Rows made before have none (NULL): only callers whose scope is every community see them, as before.
ALTER TABLE sentiment_corrections ADD COLUMN IF NOT EXISTS community_id text;
-- One correction per comment within a community, no longer across all of them: a caller scoped to one community
-- can then never replace (or learn of) a correction made in another. A missing community reads as '' (no
-- community id is empty), so a comment corrected without one is still corrected in place.
ALTER TABLE sentiment_corrections DROP CONSTRAINT IF EXISTS sentiment_corrections_comment_id_key;
CREATE UNIQUE INDEX IF NOT EXISTS sentiment_corrections_community_comment
    ON sentiment_corrections ((coalesce(community_id, '')), comment_id);
-- A scoped list reads one community's corrections, newest first.
CREATE INDEX IF NOT EXISTS sentiment_corrections_community_created
    ON sentiment_corrections (community_id, created_at, id);
