INSERT INTO etl_runs (id, job_name, state, params, requested_by, idempotency_key, created_at,
                      updated_at, max_attempts, next_attempt_at)
VALUES ($1, $2, 'pending', $3, $4, $5, $6, $6, $7, $6)
ON CONFLICT DO NOTHING
RETURNING id, job_name, state, params, requested_by, created_at, started_at, finished_at,
       attempts, max_attempts, progress_done, progress_total, progress_message, error, result,
       checkpoint
