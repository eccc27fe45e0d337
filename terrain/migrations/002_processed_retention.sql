-- Processed-message records are pruned after a retention window, oldest first, in bounded batches.
CREATE INDEX IF NOT EXISTS terrain_processed_messages_processed_at ON terrain_processed_messages (processed_at);
