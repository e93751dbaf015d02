-- Registers the names $2 as job set $1, unless that id holds another set (see
-- migrations/postgres/*_job_sets.sql): `registered` is true when $1 now holds exactly $2.
SELECT etl_register_job_set($1, $2) AS registered
