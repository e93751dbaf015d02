-- Starts up to $5 due runs of the jobs in $4 (a JSON array) whose job has no run
-- executing; the protocol then writes their attempt rows and events ($6..$8 are for
-- PostgreSQL, whose claim writes them in the same statement).
UPDATE etl_runs
SET state = 'running', attempts = attempts + 1, lease_owner = $1, lease_expires_at = $2,
    heartbeat_at = $3, started_at = COALESCE(started_at, $3), updated_at = $3
WHERE id IN (
    SELECT r.id FROM etl_runs r
    WHERE r.state IN ('pending', 'retrying') AND r.next_attempt_at <= $3
      AND r.job_name IN (SELECT value FROM json_each($4))
      AND NOT EXISTS (SELECT 1 FROM etl_runs o
                      WHERE o.job_name = r.job_name AND o.state IN ('running', 'cancelling'))
    ORDER BY r.next_attempt_at, r.created_at
    LIMIT $5)
RETURNING id, job_name, state, params, requested_by, created_at, started_at, finished_at,
       attempts, max_attempts, progress_done, progress_total, progress_message, error, result,
       checkpoint, next_attempt_at
