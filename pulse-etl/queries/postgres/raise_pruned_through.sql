UPDATE etl_retention SET events_pruned_through = GREATEST(events_pruned_through, $1) WHERE id = 1
