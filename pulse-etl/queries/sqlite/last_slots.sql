SELECT job_name, MAX(slot) AS slot FROM etl_schedule_slots GROUP BY job_name ORDER BY job_name
