UPDATE etl_runs SET state = $1, updated_at = $2, finished_at = COALESCE($3, finished_at)
WHERE id = $4
