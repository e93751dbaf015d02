-- Retention: how far events have been deleted, so a subscriber resuming from an older
-- position learns that it missed some (an SSE `reset`).
CREATE TABLE IF NOT EXISTS etl_retention (
    id                    INTEGER PRIMARY KEY CHECK (id = 1),
    events_pruned_through BIGINT NOT NULL DEFAULT 0
);
INSERT INTO etl_retention (id, events_pruned_through) VALUES (1, 0) ON CONFLICT DO NOTHING;

-- Finished runs by age, for retention.
CREATE INDEX IF NOT EXISTS etl_runs_finished
    ON etl_runs (finished_at) WHERE state IN ('succeeded', 'failed', 'cancelled');
-- Events by age, for retention.
CREATE INDEX IF NOT EXISTS etl_events_by_age ON etl_events (at);
