-- pulse-etl job store, PostgreSQL. Tables live in the connection's search_path schema.

CREATE TABLE IF NOT EXISTS etl_runs (
    id               UUID PRIMARY KEY,
    job_name         TEXT NOT NULL,
    state            TEXT NOT NULL,
    params           JSONB NOT NULL,
    requested_by     TEXT,
    idempotency_key  TEXT UNIQUE,
    created_at       TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    lease_owner      UUID,
    lease_expires_at TIMESTAMPTZ,
    heartbeat_at     TIMESTAMPTZ,
    progress_done    BIGINT NOT NULL DEFAULT 0,
    progress_total   BIGINT,
    progress_message TEXT,
    error            TEXT,
    result           JSONB,
    checkpoint       JSONB
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
    run_id           UUID NOT NULL REFERENCES etl_runs (id),
    number           INTEGER NOT NULL,
    instance_id      UUID NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL,
    lease_expires_at TIMESTAMPTZ NOT NULL,
    heartbeat_at     TIMESTAMPTZ NOT NULL,
    finished_at      TIMESTAMPTZ,
    outcome          TEXT,
    error            TEXT,
    checkpoint       JSONB,
    PRIMARY KEY (run_id, number)
);

CREATE TABLE IF NOT EXISTS etl_events (
    seq      BIGSERIAL PRIMARY KEY,
    run_id   UUID NOT NULL,
    job_name TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    kind     TEXT NOT NULL,
    payload  JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS etl_events_by_run ON etl_events (run_id, kind, seq);

-- A schedule slot fires once, whichever instance gets there first.
CREATE TABLE IF NOT EXISTS etl_schedule_slots (
    job_name TEXT NOT NULL,
    slot     TIMESTAMPTZ NOT NULL,
    run_id   UUID,
    fired_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (job_name, slot)
);
