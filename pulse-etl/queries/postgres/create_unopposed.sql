-- The common start in one statement: the run and its `pending` event, unless a unique
-- index objects (the idempotency key exists, or the job has an active run): then no row,
-- and nothing was written.
WITH run AS (
    INSERT INTO etl_runs (id, job_name, state, params, requested_by, idempotency_key,
                          created_at, updated_at, max_attempts, next_attempt_at)
    VALUES ($1, $2, 'pending', $3, $4, $5, $6, $6, $7, $6)
    ON CONFLICT DO NOTHING
    RETURNING id, job_name, state, params, requested_by, created_at, started_at, finished_at,
       attempts, max_attempts, progress_done, progress_total, progress_message, error, result,
       checkpoint),
event AS (
    INSERT INTO etl_events (run_id, job_name, at, kind, payload)
    SELECT run.id, run.job_name, run.created_at, $8, $9 FROM run
    CROSS JOIN (SELECT pg_advisory_xact_lock_shared($10)) AS writer)
SELECT id, job_name, state, params, requested_by, created_at, started_at, finished_at,
       attempts, max_attempts, progress_done, progress_total, progress_message, error, result,
       checkpoint
FROM run
