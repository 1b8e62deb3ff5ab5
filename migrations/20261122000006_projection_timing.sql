-- When a projection wrote a row (the database clock at that moment), to measure projection lag:
-- the time from an event's commit to its row. Not part of the replayable content.
ALTER TABLE refunds ADD COLUMN IF NOT EXISTS projected_at timestamptz NOT NULL DEFAULT clock_timestamp();
ALTER TABLE apps ADD COLUMN IF NOT EXISTS projected_at timestamptz NOT NULL DEFAULT clock_timestamp();
