-- pulse-etl seed jobs (jira_sync, github_sync): the normalised items they load.
-- One row per source item; a re-run upserts on (source, external_id), never duplicates.

CREATE TABLE IF NOT EXISTS etl_source_items (
    source      TEXT NOT NULL,        -- 'jira' or 'github'
    external_id TEXT NOT NULL,        -- the source's stable id of the item
    item_key    TEXT NOT NULL,        -- 'PULSE-12' (Jira) or 'owner/repo#12' (GitHub)
    kind        TEXT NOT NULL,        -- 'issue', 'pull_request', or Jira's issue type
    title       TEXT NOT NULL,
    state       TEXT NOT NULL,
    updated_at  TEXT NOT NULL,        -- as the source reported it
    url         TEXT,
    run_id      UUID NOT NULL,        -- the run that last wrote the row
    synced_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, external_id)
);
CREATE INDEX IF NOT EXISTS etl_source_items_by_key ON etl_source_items (source, item_key);
