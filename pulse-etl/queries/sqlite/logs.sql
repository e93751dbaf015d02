SELECT seq, run_id, job_name, at, payload FROM etl_events
WHERE run_id = $1 AND kind = 'log' ORDER BY seq
