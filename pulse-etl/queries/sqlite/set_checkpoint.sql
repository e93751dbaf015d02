UPDATE etl_runs SET checkpoint = $4 WHERE id = $1 AND attempts = $2 AND lease_owner = $3 AND state IN ('running', 'cancelling')
