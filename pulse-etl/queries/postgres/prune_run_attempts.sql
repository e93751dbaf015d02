DELETE FROM etl_attempts WHERE run_id = ANY($1)
