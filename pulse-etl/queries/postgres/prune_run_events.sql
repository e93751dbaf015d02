DELETE FROM etl_events WHERE run_id = ANY($1) RETURNING seq
