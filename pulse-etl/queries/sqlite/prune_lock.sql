-- One pruner at a time is the store's write lock: always granted.
SELECT 1 AS granted
