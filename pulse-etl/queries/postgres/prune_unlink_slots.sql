UPDATE etl_schedule_slots SET run_id = NULL WHERE run_id = ANY($1)
