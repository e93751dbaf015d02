-- The job names a claim may take, registered once per distinct set of names: a claim
-- names its set by id instead of sending every name, and each candidate run is checked
-- by one index probe. Measured in the queued benchmark (3,000 jobs, 8 workers):
-- receiving the array of names and scanning it for every candidate was a third of the
-- server's work per claim.
CREATE TABLE IF NOT EXISTS etl_job_sets (
    set_id   BIGINT NOT NULL,
    job_name TEXT NOT NULL,
    PRIMARY KEY (set_id, job_name)
);

-- Registers `p_names` as job set `p_set` unless that id holds another set; true when the
-- id now holds exactly these names (a caller gets false only on a digest collision, and
-- tries the next id). A transaction-level advisory lock on the id makes check and insert
-- one step, so two different sets never mix under one id.
CREATE OR REPLACE FUNCTION etl_register_job_set(p_set BIGINT, p_names TEXT[])
RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    wanted BIGINT := (SELECT count(DISTINCT name) FROM unnest(p_names) AS name);
    held BIGINT;
    matching BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(p_set);
    SELECT count(*), count(*) FILTER (WHERE s.job_name = ANY (p_names))
      INTO held, matching
      FROM etl_job_sets s WHERE s.set_id = p_set;
    IF held = 0 THEN
        INSERT INTO etl_job_sets (set_id, job_name)
        SELECT DISTINCT p_set, name FROM unnest(p_names) AS name;
        RETURN true;
    END IF;
    RETURN held = wanted AND matching = wanted;
END
$$;

-- As `etl_claimable`, for the jobs of one registered set. The plan is pinned as there:
-- walk `etl_runs_due` in order, probe the set's and the executing runs' indexes per
-- candidate, stop after `wanted` rows; one generic plan per connection.
CREATE OR REPLACE FUNCTION etl_claimable_in(due TIMESTAMPTZ, job_set BIGINT, wanted BIGINT)
RETURNS SETOF UUID
LANGUAGE plpgsql VOLATILE
ROWS 1
SET enable_bitmapscan = off
SET enable_sort = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
    SELECT r.id FROM etl_runs r
    WHERE r.state IN ('pending', 'retrying') AND r.next_attempt_at <= due
      AND EXISTS (SELECT 1 FROM etl_job_sets s
                  WHERE s.set_id = job_set AND s.job_name = r.job_name)
      AND NOT EXISTS (SELECT 1 FROM etl_runs o
                      WHERE o.job_name = r.job_name AND o.state IN ('running', 'cancelling'))
    ORDER BY r.next_attempt_at, r.created_at
    LIMIT wanted
    FOR UPDATE OF r SKIP LOCKED;
END
$$;
