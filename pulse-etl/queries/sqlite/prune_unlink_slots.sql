UPDATE etl_schedule_slots SET run_id = NULL WHERE run_id IN (SELECT value FROM json_each($1))
