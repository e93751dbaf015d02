-- pulse-etl job store, SQLite. Times are microseconds since the Unix epoch (UTC).

CREATE TABLE IF NOT EXISTS etl_runs (
    id               TEXT PRIMARY KEY NOT NULL,
    job_name         TEXT NOT NULL,
    state            TEXT NOT NULL,
    params           TEXT NOT NULL,
    requested_by     TEXT,
    idempotency_key  TEXT UNIQUE,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    updated_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    heartbeat_at     INTEGER,
    progress_done    INTEGER NOT NULL DEFAULT 0,
    progress_total   INTEGER,
    progress_message TEXT,
    error            TEXT,
    result           TEXT,
    checkpoint       TEXT
);

-- One active run per job, enforced by the store rather than by a racy check.
CREATE UNIQUE INDEX IF NOT EXISTS etl_runs_one_active_per_job
    ON etl_runs (job_name) WHERE state IN ('pending', 'running', 'retrying');
CREATE INDEX IF NOT EXISTS etl_runs_due
    ON etl_runs (next_attempt_at, created_at) WHERE state IN ('pending', 'retrying');
CREATE INDEX IF NOT EXISTS etl_runs_leases
    ON etl_runs (lease_expires_at) WHERE state IN ('running', 'cancelling');
CREATE INDEX IF NOT EXISTS etl_runs_by_job
    ON etl_runs (job_name, created_at);

CREATE TABLE IF NOT EXISTS etl_attempts (
    run_id           TEXT NOT NULL REFERENCES etl_runs (id),
    number           INTEGER NOT NULL,
    instance_id      TEXT NOT NULL,
    started_at       INTEGER NOT NULL,
    lease_expires_at INTEGER NOT NULL,
    heartbeat_at     INTEGER NOT NULL,
    finished_at      INTEGER,
    outcome          TEXT,
    error            TEXT,
    checkpoint       TEXT,
    PRIMARY KEY (run_id, number)
);

CREATE TABLE IF NOT EXISTS etl_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   TEXT NOT NULL,
    job_name TEXT NOT NULL,
    at       INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    payload  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS etl_events_by_run ON etl_events (run_id, kind, seq);

-- A schedule slot fires once, whichever instance gets there first.
CREATE TABLE IF NOT EXISTS etl_schedule_slots (
    job_name TEXT NOT NULL,
    slot     INTEGER NOT NULL,
    run_id   TEXT,
    fired_at INTEGER NOT NULL,
    PRIMARY KEY (job_name, slot)
);
