//! What can go wrong with an account operation. The CLI prints these messages as they
//! are; the admin API answers each kind with its own status (see `backend::admin`).

use super::password::WeakPassword;

/// An account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The e-mail is taken.
    #[error("a user with the e-mail {0} already exists")]
    DuplicateEmail(String),
    /// No user with this e-mail or id.
    #[error("no such user: {0}")]
    UnknownUser(String),
    /// A role that does not exist.
    #[error("no such role: {name} (roles: {})", known.join(", "))]
    UnknownRole {
        /// The role asked for.
        name: String,
        /// The roles that exist.
        known: Vec<String>,
    },
    /// The role name is taken.
    #[error("the role {0} already exists")]
    DuplicateRole(String),
    /// The role is held by users.
    #[error("the role {name} is held by {users} user(s); give them other roles first")]
    RoleInUse {
        /// The role.
        name: String,
        /// How many users hold it.
        users: i64,
    },
    /// The change would leave no enabled user holding `users.manage` (admin API only).
    #[error(
        "this would leave nobody able to administer the gateway: \
         give users.manage to another enabled user first"
    )]
    LastAdministrator,
    /// Not an e-mail address we accept.
    #[error("invalid e-mail address: {0}")]
    InvalidEmail(&'static str),
    /// Not a role name we accept.
    #[error("invalid role name {0:?}: 1 to 64 of a-z, 0-9, '_', '-' and '.'")]
    InvalidRoleName(String),
    /// Not a permission grant (dotted names, whole-segment `*`).
    #[error(
        "invalid permission {0:?}: dotted names such as etl.jobs.run, or * for a whole segment"
    )]
    InvalidPermission(String),
    /// The password breaks a rule.
    #[error("weak password: {0}")]
    WeakPassword(WeakPassword),
    /// The database cannot be reached (or opened).
    #[error("cannot reach the accounts database: {0}")]
    Unreachable(String),
    /// The tables cannot be brought up to date.
    #[error("accounts tables: {0}")]
    Schema(String),
    /// Any other database failure.
    #[error("accounts database: {0}")]
    Database(#[from] sqlx::Error),
    /// Hashing a password failed.
    #[error("hashing the password failed: {0}")]
    Hashing(String),
}
