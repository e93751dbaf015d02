UPDATE etl_runs
SET state = $1, error = $2, result = COALESCE($3, result),
    next_attempt_at = COALESCE($4, next_attempt_at), finished_at = $5, lease_owner = NULL,
    lease_expires_at = NULL, updated_at = $6, max_attempts = max_attempts + $7
WHERE id = $8
