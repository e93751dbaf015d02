UPDATE etl_schedule_slots SET run_id = $1 WHERE job_name = $2 AND slot = $3
