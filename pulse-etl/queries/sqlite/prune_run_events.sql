DELETE FROM etl_events WHERE run_id IN (SELECT value FROM json_each($1)) RETURNING seq
