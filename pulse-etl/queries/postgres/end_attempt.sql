UPDATE etl_attempts SET finished_at = $1, outcome = $2, error = $3
WHERE run_id = $4 AND number = $5 AND finished_at IS NULL
