SELECT 1 AS held FROM etl_runs WHERE id = $1 AND attempts = $2 AND lease_owner = $3 AND state IN ('running', 'cancelling')
