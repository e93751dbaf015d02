UPDATE etl_attempts SET lease_expires_at = $1, heartbeat_at = $2
WHERE run_id = $3 AND number = $4
