-- The schema's event lock ($6) is taken in shared mode before the row draws its seq and
-- held until commit: readers use it to tell a gap that is still in flight (events.rs).
INSERT INTO etl_events (run_id, job_name, at, kind, payload)
SELECT $1, $2, $3, $4, $5 FROM (SELECT pg_advisory_xact_lock_shared($6)) AS writer
