-- Waits until no writer holds the event lock (see store/postgres/events.rs).
SELECT true AS granted FROM (SELECT pg_advisory_xact_lock($1)) AS waited
