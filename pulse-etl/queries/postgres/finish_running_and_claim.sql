-- The common finish in one statement: attempt $2 of run $1, held by instance $3 and
-- still `running`, ends with its attempt row and event; $11: the run must have an attempt
-- left (a retryable failure). No row when the run is not in that case: nothing written.
-- The same statement claims one run of the jobs of set $17 for the worker it frees (leased
-- until $18; $19, $20: the `running` event), only when the finish was written.
WITH run AS (
    UPDATE etl_runs
    SET state = $4, error = $5, result = COALESCE($6, result),
        next_attempt_at = COALESCE($7, next_attempt_at), finished_at = $8, lease_owner = NULL,
        lease_expires_at = NULL, updated_at = $9, max_attempts = max_attempts + $10
    WHERE id = $1 AND attempts = $2 AND lease_owner = $3 AND state = 'running'
      AND (NOT $11 OR attempts < max_attempts)
    RETURNING id, job_name, state, params, requested_by, created_at, started_at, finished_at,
       attempts, max_attempts, progress_done, progress_total, progress_message, error, result,
       checkpoint),
attempt AS (
    -- By key, once the run's update matched (a join to `run` scanned every attempt).
    UPDATE etl_attempts a SET finished_at = $9, outcome = $12, error = $13
    WHERE a.run_id = $1 AND a.number = $2 AND a.finished_at IS NULL AND EXISTS (SELECT 1 FROM run)
    RETURNING a.run_id),
event AS (
    INSERT INTO etl_events (run_id, job_name, at, kind, payload)
    SELECT run.id, run.job_name, $9, $14, $15 FROM run
    LEFT JOIN attempt ON attempt.run_id = run.id
    CROSS JOIN (SELECT pg_advisory_xact_lock_shared($16)) AS writer),
next AS (SELECT id FROM etl_claimable_in($9, $17, (SELECT count(*) FROM run)) AS next (id)),
claimed AS (
    UPDATE etl_runs
    SET state = 'running', attempts = attempts + 1, lease_owner = $3, lease_expires_at = $18,
        heartbeat_at = $9, started_at = COALESCE(started_at, $9), updated_at = $9
    FROM next WHERE etl_runs.id = next.id
    RETURNING etl_runs.id, etl_runs.job_name, etl_runs.state, etl_runs.params,
              etl_runs.requested_by, etl_runs.created_at, etl_runs.started_at,
              etl_runs.finished_at, etl_runs.attempts, etl_runs.max_attempts,
              etl_runs.progress_done, etl_runs.progress_total, etl_runs.progress_message,
              etl_runs.error, etl_runs.result, etl_runs.checkpoint, etl_runs.next_attempt_at),
claimed_attempt AS (
    INSERT INTO etl_attempts (run_id, number, instance_id, started_at, lease_expires_at,
                              heartbeat_at)
    SELECT id, attempts, $3, $9, $18, $9 FROM claimed
    RETURNING run_id),
claimed_event AS (
    INSERT INTO etl_events (run_id, job_name, at, kind, payload)
    SELECT c.id, c.job_name, $9, $19, jsonb_set($20::jsonb, '{attempt}', to_jsonb(c.attempts))
    FROM claimed c JOIN claimed_attempt a ON a.run_id = c.id
    CROSS JOIN (SELECT pg_advisory_xact_lock_shared($16)) AS writer)
SELECT false AS claimed, id, job_name, state, params, requested_by, created_at, started_at, finished_at,
       attempts, max_attempts, progress_done, progress_total, progress_message, error, result,
       checkpoint
FROM run
UNION ALL
SELECT true, id, job_name, state, params, requested_by, created_at, started_at, finished_at,
       attempts, max_attempts, progress_done, progress_total, progress_message, error, result,
       checkpoint
FROM claimed
