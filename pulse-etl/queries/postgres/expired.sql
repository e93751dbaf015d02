SELECT id, job_name, state, attempts, max_attempts FROM etl_runs
WHERE state IN ('running', 'cancelling') AND lease_expires_at < $1
ORDER BY id
FOR UPDATE SKIP LOCKED
