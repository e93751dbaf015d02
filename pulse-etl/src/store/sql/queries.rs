//! The SQL text of each statement, one file per statement and dialect under
//! `queries/sqlite/` and `queries/postgres/`. Parameters are `$1`, `$2`… in both (SQLite
//! reads `$N` as the N-th parameter and ignores parameters a statement does not use).

/// Every statement the protocol runs, in one dialect.
#[derive(Debug)]
pub(crate) struct Queries {
    pub(crate) ping: &'static str,
    // Runs, by id or key, and the job's run holding its active slot.
    pub(crate) run_by_id: &'static str,
    pub(crate) run_by_id_for_update: &'static str,
    pub(crate) run_by_key: &'static str,
    pub(crate) slot_holder: &'static str,
    pub(crate) slot_holder_for_update: &'static str,
    // Writes.
    pub(crate) insert_run: &'static str,
    pub(crate) insert_event: &'static str,
    pub(crate) set_cancel_state: &'static str,
    pub(crate) end_run: &'static str,
    pub(crate) end_attempt: &'static str,
    pub(crate) claim: &'static str,
    /// The attempt row of a claimed run; `None` where `claim` writes the attempt rows
    /// and `running` events itself.
    pub(crate) insert_attempt: Option<&'static str>,
    pub(crate) renew_lease: &'static str,
    pub(crate) renew_attempt: &'static str,
    pub(crate) fence_held: &'static str,
    pub(crate) fenced_run_for_update: &'static str,
    pub(crate) fenced_job: &'static str,
    pub(crate) set_progress: &'static str,
    pub(crate) set_checkpoint: &'static str,
    pub(crate) set_attempt_checkpoint: &'static str,
    pub(crate) expired: &'static str,
    pub(crate) insert_slot: &'static str,
    pub(crate) link_slot: &'static str,
    // Reads.
    pub(crate) list_runs: &'static str,
    pub(crate) latest_runs: &'static str,
    pub(crate) active_runs: &'static str,
    pub(crate) count_states: &'static str,
    pub(crate) attempts: &'static str,
    pub(crate) logs: &'static str,
    pub(crate) events_since: &'static str,
    pub(crate) latest_event_seq: &'static str,
    pub(crate) last_slots: &'static str,
    // Retention.
    pub(crate) prune_lock: &'static str,
    pub(crate) prune_aged_events: &'static str,
    pub(crate) prune_pick_runs: &'static str,
    pub(crate) prune_run_events: &'static str,
    pub(crate) prune_run_attempts: &'static str,
    pub(crate) prune_unlink_slots: &'static str,
    pub(crate) prune_runs: &'static str,
    pub(crate) prune_slots: &'static str,
    pub(crate) raise_pruned_through: &'static str,
    pub(crate) pruned_through: &'static str,
}

/// The [`Queries`] of one dialect, from `queries/<dialect>/<field>.sql`; `insert_attempt`
/// given as `Some(..)` or `None`.
macro_rules! queries {
    ($dialect:literal, insert_attempt: $insert_attempt:ident) => {
        $crate::store::sql::queries::Queries {
            ping: queries!(@file $dialect, "ping"),
            run_by_id: queries!(@file $dialect, "run_by_id"),
            run_by_id_for_update: queries!(@file $dialect, "run_by_id_for_update"),
            run_by_key: queries!(@file $dialect, "run_by_key"),
            slot_holder: queries!(@file $dialect, "slot_holder"),
            slot_holder_for_update: queries!(@file $dialect, "slot_holder_for_update"),
            insert_run: queries!(@file $dialect, "insert_run"),
            insert_event: queries!(@file $dialect, "insert_event"),
            set_cancel_state: queries!(@file $dialect, "set_cancel_state"),
            end_run: queries!(@file $dialect, "end_run"),
            end_attempt: queries!(@file $dialect, "end_attempt"),
            claim: queries!(@file $dialect, "claim"),
            insert_attempt: queries!(@opt $insert_attempt $dialect, "insert_attempt"),
            renew_lease: queries!(@file $dialect, "renew_lease"),
            renew_attempt: queries!(@file $dialect, "renew_attempt"),
            fence_held: queries!(@file $dialect, "fence_held"),
            fenced_run_for_update: queries!(@file $dialect, "fenced_run_for_update"),
            fenced_job: queries!(@file $dialect, "fenced_job"),
            set_progress: queries!(@file $dialect, "set_progress"),
            set_checkpoint: queries!(@file $dialect, "set_checkpoint"),
            set_attempt_checkpoint: queries!(@file $dialect, "set_attempt_checkpoint"),
            expired: queries!(@file $dialect, "expired"),
            insert_slot: queries!(@file $dialect, "insert_slot"),
            link_slot: queries!(@file $dialect, "link_slot"),
            list_runs: queries!(@file $dialect, "list_runs"),
            latest_runs: queries!(@file $dialect, "latest_runs"),
            active_runs: queries!(@file $dialect, "active_runs"),
            count_states: queries!(@file $dialect, "count_states"),
            attempts: queries!(@file $dialect, "attempts"),
            logs: queries!(@file $dialect, "logs"),
            events_since: queries!(@file $dialect, "events_since"),
            latest_event_seq: queries!(@file $dialect, "latest_event_seq"),
            last_slots: queries!(@file $dialect, "last_slots"),
            prune_lock: queries!(@file $dialect, "prune_lock"),
            prune_aged_events: queries!(@file $dialect, "prune_aged_events"),
            prune_pick_runs: queries!(@file $dialect, "prune_pick_runs"),
            prune_run_events: queries!(@file $dialect, "prune_run_events"),
            prune_run_attempts: queries!(@file $dialect, "prune_run_attempts"),
            prune_unlink_slots: queries!(@file $dialect, "prune_unlink_slots"),
            prune_runs: queries!(@file $dialect, "prune_runs"),
            prune_slots: queries!(@file $dialect, "prune_slots"),
            raise_pruned_through: queries!(@file $dialect, "raise_pruned_through"),
            pruned_through: queries!(@file $dialect, "pruned_through"),
        }
    };
    (@file $dialect:literal, $name:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/queries/", $dialect, "/", $name, ".sql"))
    };
    (@opt Some $dialect:literal, $name:literal) => {
        Some(queries!(@file $dialect, $name))
    };
    (@opt None $dialect:literal, $name:literal) => {
        None
    };
}
pub(crate) use queries;
