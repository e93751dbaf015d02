SELECT events_pruned_through AS seq FROM etl_retention WHERE id = 1
