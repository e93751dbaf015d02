SELECT COALESCE(MAX(seq), 0) AS seq FROM etl_events
