DELETE FROM etl_runs WHERE id = ANY($1)
