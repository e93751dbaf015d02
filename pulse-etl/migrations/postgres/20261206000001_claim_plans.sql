-- The claim's plans, measured in the queued benchmark (3,000 jobs, 8 workers), where the
-- finish that claims the next run took 2.4 ms of server time per call:
-- * `ROWS 1`: a claim usually takes one run (the finish that frees a worker claims one;
--   a poll at most one per free worker). With the default estimate of 1,000 rows, or even
--   8, the planner joined `etl_runs` to the function's result by hashing a sequential
--   scan of the whole table on every claim; now it looks the ids up by key.
-- * `force_generic_plan`: PL/pgSQL planned the query afresh on every call (a custom
--   plan), estimating the selectivity of `job_name = ANY (jobs)` element by element over
--   every registered job name. One generic plan per connection serves every call.
ALTER FUNCTION etl_claimable(TIMESTAMPTZ, TEXT[], BIGINT)
    ROWS 1
    SET plan_cache_mode = force_generic_plan;
