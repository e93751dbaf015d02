INSERT INTO etl_attempts (run_id, number, instance_id, started_at, lease_expires_at, heartbeat_at)
VALUES ($1, $2, $3, $4, $5, $4)
