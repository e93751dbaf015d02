-- $6 (the PostgreSQL event lock) is not used here: the store's write lock orders events.
INSERT INTO etl_events (run_id, job_name, at, kind, payload) VALUES ($1, $2, $3, $4, $5)
