DELETE FROM etl_events
WHERE seq IN (SELECT seq FROM etl_events WHERE at < $1 AND kind <> 'log' ORDER BY seq LIMIT $2)
RETURNING seq
