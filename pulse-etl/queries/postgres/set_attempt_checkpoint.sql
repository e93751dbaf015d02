UPDATE etl_attempts SET checkpoint = $1 WHERE run_id = $2 AND number = $3
