SELECT id, job_name, state, params, requested_by, created_at, started_at, finished_at,
       attempts, max_attempts, progress_done, progress_total, progress_message, error, result,
       checkpoint
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY job_name ORDER BY created_at DESC, id DESC)
                AS position
      FROM etl_runs)
WHERE position = 1 ORDER BY job_name
