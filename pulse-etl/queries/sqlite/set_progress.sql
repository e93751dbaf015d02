UPDATE etl_runs SET progress_done = $4, progress_total = $5, progress_message = $6, updated_at = $7
WHERE id = $1 AND attempts = $2 AND lease_owner = $3 AND state IN ('running', 'cancelling')
RETURNING job_name
