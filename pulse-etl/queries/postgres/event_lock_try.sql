-- Takes the event lock if no writer holds it, without waiting.
SELECT pg_try_advisory_xact_lock($1) AS granted
