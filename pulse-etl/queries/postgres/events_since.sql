SELECT seq, run_id, job_name, at, payload FROM etl_events WHERE seq > $1 ORDER BY seq LIMIT $2
