//! The versioned migrations of the gateway's tables, recorded in `gateway_migrations`
//! (the job store keeps its own in `_sqlx_migrations`; the two never meet).
//!
//! A migration is a list of statements written once; `{serial}` stands for the dialect's
//! auto-numbered primary key. The few statements only one dialect has (triggers) are
//! listed per dialect. Applied migrations are never edited: add a new one.
//!
//! Times are milliseconds since the Unix epoch (`BIGINT`); flags are `0`/`1`.

use super::db::Dialect;

/// One migration.
#[derive(Debug)]
pub struct Migration {
    /// Its version: applied in increasing order, each once.
    pub version: i64,
    /// What it does.
    pub name: &'static str,
    /// Statements for both dialects.
    common: &'static [&'static str],
    /// Then these on SQLite.
    sqlite: &'static [&'static str],
    /// Or these on PostgreSQL.
    postgres: &'static [&'static str],
}

impl Migration {
    /// The statements to run on `dialect`.
    pub fn statements(&self, dialect: Dialect) -> Vec<String> {
        let only = match dialect {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => self.postgres,
        };
        self.common
            .iter()
            .chain(only)
            .map(|s| s.replace("{serial}", dialect.serial_primary_key()))
            .collect()
    }
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "accounts",
        common: &[
            // E-mails are stored trimmed and lower-cased: they are the login names.
            "CREATE TABLE gateway_users (
                id TEXT PRIMARY KEY,
                email TEXT NOT NULL UNIQUE,
                password_hash TEXT NOT NULL,
                disabled BIGINT NOT NULL DEFAULT 0,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                last_login_at BIGINT
            )",
            "CREATE TABLE gateway_roles (
                name TEXT PRIMARY KEY,
                description TEXT,
                created_at BIGINT NOT NULL
            )",
            "CREATE TABLE gateway_role_permissions (
                role TEXT NOT NULL REFERENCES gateway_roles (name) ON DELETE CASCADE,
                permission TEXT NOT NULL,
                PRIMARY KEY (role, permission)
            )",
            // No cascade from roles: a role held by someone cannot be removed.
            "CREATE TABLE gateway_user_roles (
                user_id TEXT NOT NULL REFERENCES gateway_users (id) ON DELETE CASCADE,
                role TEXT NOT NULL REFERENCES gateway_roles (name),
                PRIMARY KEY (user_id, role)
            )",
            "CREATE INDEX gateway_user_roles_role ON gateway_user_roles (role)",
            // Refresh tokens: only their SHA-256; one family per login, each rotation
            // marks the old token rotated and adds the next.
            "CREATE TABLE gateway_refresh_tokens (
                token_hash TEXT PRIMARY KEY,
                family_id TEXT NOT NULL,
                user_id TEXT NOT NULL REFERENCES gateway_users (id) ON DELETE CASCADE,
                issued_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                rotated_at BIGINT,
                revoked_at BIGINT
            )",
            "CREATE INDEX gateway_refresh_tokens_family ON gateway_refresh_tokens (family_id)",
            "CREATE INDEX gateway_refresh_tokens_user ON gateway_refresh_tokens (user_id)",
            "CREATE INDEX gateway_refresh_tokens_expiry ON gateway_refresh_tokens (expires_at)",
            // Revoked access tokens (`kind` 'token': a jti) and sessions ('session': a
            // refresh family, the tokens' sid), kept until no such token can be alive.
            "CREATE TABLE gateway_revoked_tokens (
                kind TEXT NOT NULL,
                token_id TEXT NOT NULL,
                expires_at BIGINT NOT NULL,
                PRIMARY KEY (kind, token_id)
            )",
            "CREATE INDEX gateway_revoked_tokens_expiry ON gateway_revoked_tokens (expires_at)",
            // Tokens of the user issued before `valid_after` (a whole second) are revoked.
            // No foreign key: the stamp of a removed user must outlive the user.
            "CREATE TABLE gateway_user_stamps (
                user_id TEXT PRIMARY KEY,
                valid_after BIGINT NOT NULL
            )",
            "CREATE TABLE gateway_audit_events (
                id {serial},
                at BIGINT NOT NULL,
                action TEXT NOT NULL,
                actor TEXT,
                target TEXT,
                detail TEXT NOT NULL,
                request_id TEXT,
                client_addr TEXT
            )",
            "CREATE INDEX gateway_audit_events_at ON gateway_audit_events (at)",
            "CREATE INDEX gateway_audit_events_action ON gateway_audit_events (action, id)",
            "CREATE INDEX gateway_audit_events_actor ON gateway_audit_events (actor, id)",
            "CREATE INDEX gateway_audit_events_target ON gateway_audit_events (target, id)",
            // One row: bumped by every change a running gateway must pick up (revocations,
            // stamps, users, roles), from any process; gateways poll it.
            "CREATE TABLE gateway_changes (
                id BIGINT PRIMARY KEY,
                version BIGINT NOT NULL
            )",
            "INSERT INTO gateway_changes (id, version) VALUES (1, 0)",
        ],
        // The audit trail is append-only: rows are added, and deleted only by retention.
        sqlite: &["CREATE TRIGGER gateway_audit_events_append_only
             BEFORE UPDATE ON gateway_audit_events
             BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END"],
        postgres: &[
            "CREATE FUNCTION gateway_audit_events_append_only() RETURNS trigger
             LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'audit events are append-only'; END $$",
            "CREATE TRIGGER gateway_audit_events_append_only
             BEFORE UPDATE ON gateway_audit_events
             FOR EACH ROW EXECUTE FUNCTION gateway_audit_events_append_only()",
        ],
    },
    Migration {
        version: 2,
        name: "standard roles",
        // Present whether or not the demo runs, so that the first administrator can be
        // created with `full_stack users add EMAIL --role admin`. Removable like any role.
        common: &[
            "INSERT INTO gateway_roles (name, description, created_at)
             VALUES ('admin', 'every permission', 0),
                    ('operator', 'may run and cancel jobs', 0),
                    ('viewer', 'read-only', 0)",
            "INSERT INTO gateway_role_permissions (role, permission)
             VALUES ('admin', '*'),
                    ('operator', 'etl.access'), ('operator', 'etl.jobs.run'),
                    ('viewer', 'etl.access')",
        ],
        sqlite: &[],
        postgres: &[],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_every_table_has_the_prefix() {
        let mut last = 0;
        for migration in MIGRATIONS {
            assert!(migration.version > last, "{}", migration.name);
            last = migration.version;
            for dialect in [Dialect::Sqlite, Dialect::Postgres] {
                for statement in migration.statements(dialect) {
                    assert!(!statement.contains("{serial}"));
                    for word in [
                        "CREATE TABLE ",
                        "CREATE INDEX ",
                        "INSERT INTO ",
                        "REFERENCES ",
                    ] {
                        for (at, _) in statement.match_indices(word) {
                            let rest = statement[at + word.len()..].trim_start();
                            assert!(
                                rest.starts_with(super::super::db::TABLE_PREFIX),
                                "{statement}"
                            );
                        }
                    }
                }
            }
        }
    }
}
