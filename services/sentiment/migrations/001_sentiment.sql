-- Labels a community manager corrected: the next training run learns from them.
-- One row per comment (the latest correction wins); texts corrected without a comment id each keep a row.
CREATE TABLE IF NOT EXISTS sentiment_corrections (
    id                     bigserial   PRIMARY KEY,
    comment_id             text        UNIQUE,
    text                   text        NOT NULL,
    lang                   text,
    label                  text        NOT NULL CHECK (label IN ('negative', 'neutral', 'positive')),
    previous_label         text        CHECK (previous_label IN ('negative', 'neutral', 'positive')),
    previous_model_version text,
    corrected_by           text,
    note                   text,
    created_at             timestamptz NOT NULL
);
-- The list filters by time (since) and label, newest first; the export reads oldest first.
CREATE INDEX IF NOT EXISTS sentiment_corrections_created ON sentiment_corrections (created_at, id);
CREATE INDEX IF NOT EXISTS sentiment_corrections_label_created ON sentiment_corrections (label, created_at, id);
