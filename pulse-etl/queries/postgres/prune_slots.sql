-- Old slots, but each job's newest stays: catch-up counts from it.
DELETE FROM etl_schedule_slots
WHERE (job_name, slot) IN (
    SELECT o.job_name, o.slot FROM etl_schedule_slots o
    WHERE o.slot < $1
      AND o.slot < (SELECT MAX(m.slot) FROM etl_schedule_slots m WHERE m.job_name = o.job_name)
    ORDER BY o.slot LIMIT $2)
