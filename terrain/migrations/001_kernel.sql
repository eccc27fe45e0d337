-- Kernel tables shared by every service: the processed-message record (idempotency) and the outbox.
CREATE TABLE IF NOT EXISTS terrain_processed_messages (
    consumer     text        NOT NULL,
    message_id   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

CREATE TABLE IF NOT EXISTS terrain_outbox (
    id         bigserial   PRIMARY KEY,
    service    text        NOT NULL,
    topic      text        NOT NULL,
    key        text        NOT NULL,
    value      bytea       NOT NULL,
    headers    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS terrain_outbox_service_id ON terrain_outbox (service, id);
