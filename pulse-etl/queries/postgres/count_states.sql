SELECT state, COUNT(*) AS n FROM etl_runs GROUP BY state
