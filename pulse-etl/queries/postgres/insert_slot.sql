INSERT INTO etl_schedule_slots (job_name, slot, fired_at) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING
