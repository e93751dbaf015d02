-- One statement: pick up to $5 due runs of the jobs of set $4 (etl_claimable_in: FOR UPDATE
-- SKIP LOCKED), start them as attempts of instance $1 leased until $2, write their
-- attempt rows and their `running` events ($6 kind, $7 payload, each event's attempt
-- number filled in from its run). Row locks first, the events' shared lock ($8) last.
WITH next AS (SELECT id FROM etl_claimable_in($3, $4, $5) AS next (id)),
claimed AS (
    UPDATE etl_runs
    SET state = 'running', attempts = attempts + 1, lease_owner = $1, lease_expires_at = $2,
        heartbeat_at = $3, started_at = COALESCE(started_at, $3), updated_at = $3
    FROM next WHERE etl_runs.id = next.id
    RETURNING etl_runs.id, etl_runs.job_name, etl_runs.state, etl_runs.params,
              etl_runs.requested_by, etl_runs.created_at, etl_runs.started_at,
              etl_runs.finished_at, etl_runs.attempts, etl_runs.max_attempts,
              etl_runs.progress_done, etl_runs.progress_total, etl_runs.progress_message,
              etl_runs.error, etl_runs.result, etl_runs.checkpoint, etl_runs.next_attempt_at),
claimed_attempt AS (
    INSERT INTO etl_attempts (run_id, number, instance_id, started_at, lease_expires_at,
                              heartbeat_at)
    SELECT id, attempts, $1, $3, $2, $3 FROM claimed
    RETURNING run_id),
claimed_event AS (
    INSERT INTO etl_events (run_id, job_name, at, kind, payload)
    SELECT c.id, c.job_name, $3, $6, jsonb_set($7::jsonb, '{attempt}', to_jsonb(c.attempts))
    FROM claimed c JOIN claimed_attempt a ON a.run_id = c.id
    CROSS JOIN (SELECT pg_advisory_xact_lock_shared($8)) AS writer)
SELECT * FROM claimed ORDER BY next_attempt_at, created_at
