-- Held until the transaction ends; another instance skips its turn.
SELECT pg_try_advisory_xact_lock($1) AS granted
