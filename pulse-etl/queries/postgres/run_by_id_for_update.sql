SELECT id, job_name, state, params, requested_by, created_at, started_at, finished_at,
       attempts, max_attempts, progress_done, progress_total, progress_message, error, result,
       checkpoint
FROM etl_runs WHERE id = $1
FOR UPDATE
