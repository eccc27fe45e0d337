-- The last policy step whose page was really sent: a muted step is run again, not skipped.
ALTER TABLE escalation_incidents ADD COLUMN IF NOT EXISTS paged_step int NOT NULL DEFAULT 0;
