-- Claims (issue 14).

-- A claim skips the runs of jobs that have a run executing: one probe per candidate in
-- this small index (only running and cancelling runs), instead of the job's history.
CREATE INDEX IF NOT EXISTS etl_runs_executing_by_job
    ON etl_runs (job_name) WHERE state IN ('running', 'cancelling');

-- The runs one claim takes: the `wanted` oldest due runs of `jobs` whose job has no run
-- executing, locked (skipping runs another claim holds). It must walk `etl_runs_due` in
-- order and stop after `wanted` rows; on a table filled faster than autovacuum analyses
-- it, the planner would rather filter and sort every due run, once per claim, so the
-- walk is pinned here. Tables resolve through the caller's search_path (the store's
-- schema).
CREATE OR REPLACE FUNCTION etl_claimable(due TIMESTAMPTZ, jobs TEXT[], wanted BIGINT)
RETURNS SETOF UUID
LANGUAGE plpgsql VOLATILE
SET enable_bitmapscan = off
SET enable_sort = off
AS $$
BEGIN
    RETURN QUERY
    SELECT r.id FROM etl_runs r
    WHERE r.state IN ('pending', 'retrying') AND r.next_attempt_at <= due
      AND r.job_name = ANY (jobs)
      AND NOT EXISTS (SELECT 1 FROM etl_runs o
                      WHERE o.job_name = r.job_name AND o.state IN ('running', 'cancelling'))
    ORDER BY r.next_attempt_at, r.created_at
    LIMIT wanted
    FOR UPDATE OF r SKIP LOCKED;
END
$$;
