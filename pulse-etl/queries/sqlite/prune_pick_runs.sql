-- Finished before the cut-off, and not the latest run of its job.
SELECT r.id FROM etl_runs r
WHERE r.state IN ('succeeded', 'failed', 'cancelled') AND r.finished_at < $1
  AND EXISTS (SELECT 1 FROM etl_runs n
              WHERE n.job_name = r.job_name AND (n.created_at, n.id) > (r.created_at, r.id))
ORDER BY r.finished_at LIMIT $2
