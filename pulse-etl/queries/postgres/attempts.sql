SELECT number, instance_id, started_at, lease_expires_at, heartbeat_at, finished_at, outcome,
       error, checkpoint
FROM etl_attempts WHERE run_id = $1 ORDER BY number
