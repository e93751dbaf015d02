UPDATE etl_runs SET lease_expires_at = $4, heartbeat_at = $5
WHERE id = $1 AND attempts = $2 AND lease_owner = $3 AND state IN ('running', 'cancelling')
RETURNING state
