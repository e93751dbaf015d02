//! `full_stack users …` and `full_stack roles …`: the accounts from the command line,
//! on the same database as the gateway (`--database-url`, `--data-dir`), also while the
//! stack runs — a running gateway picks the changes up within a second (it polls the
//! change counter every change bumps).
//!
//! Each command is a function over an [`AccountStore`] writing to any output, so the
//! tests run them in process. Every change is audited with the actor `cli:<os user>`.

use std::io::{BufRead, Write};

use clap::Subcommand;
use serde_json::json;

use super::password::{self, PasswordHashing};
use super::users::{AdminGuard, UserKey};
use super::{AccountError, AccountStore, Origin};

/// `full_stack users …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum UsersCommand {
    /// Add a user. Without --password-stdin a strong password is generated and printed once.
    Add {
        /// The login e-mail.
        email: String,
        /// Its roles (`--role admin`, `--role operator viewer`).
        #[arg(long = "role", value_name = "ROLE", required = true, num_args = 1..)]
        roles: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the users (a table, or JSON).
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Set a new password (generated and printed once, unless --password-stdin); the
    /// user's sessions end.
    Passwd {
        /// The user's e-mail.
        email: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Replace the user's roles; tokens issued before stop working at once.
    Roles {
        /// The user's e-mail.
        email: String,
        /// The new roles (all of them).
        #[arg(long = "set", value_name = "ROLE", required = true, num_args = 1..)]
        roles: Vec<String>,
    },
    /// Refuse the user's sign-ins; their sessions end at once.
    Disable {
        /// The user's e-mail.
        email: String,
    },
    /// Let a disabled user sign in again.
    Enable {
        /// The user's e-mail.
        email: String,
    },
    /// Remove the user; their sessions end at once.
    Remove {
        /// The user's e-mail.
        email: String,
    },
}

/// `full_stack roles …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum RolesCommand {
    /// List the roles with their permissions and number of users.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a role.
    Add {
        /// Its name (a-z, 0-9, _ - .).
        name: String,
        /// Its permission grants (`--permission etl.access etl.jobs.run`; `*` wildcards whole segments).
        #[arg(long = "permission", value_name = "PERM", required = true, num_args = 1..)]
        permissions: Vec<String>,
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
    },
    /// Remove a role nobody holds.
    Remove {
        /// Its name.
        name: String,
    },
}

/// What the commands work with.
pub struct Console<'a> {
    /// The accounts.
    pub store: &'a AccountStore,
    /// Hashes new passwords.
    pub hashing: &'a PasswordHashing,
    /// The actor of every change (`cli:<os user>`).
    pub origin: Origin,
    /// Where results go.
    pub out: &'a mut dyn Write,
    /// Where `--password-stdin` reads.
    pub input: &'a mut dyn BufRead,
}

impl std::fmt::Debug for Console<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// A CLI failure: an account error, or output that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The operation failed.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// No password on standard input.
    #[error("expected the password on the first line of standard input")]
    NoPassword,
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

impl Console<'_> {
    /// The password of `--password-stdin` (checked against the rules), or a generated one.
    fn password(&mut self, from_stdin: bool) -> Result<(String, bool), CliError> {
        if !from_stdin {
            return Ok((password::generate(), true));
        }
        let mut line = String::new();
        self.input.read_line(&mut line)?;
        let password = line.trim_end_matches(['\r', '\n']).to_owned();
        if password.is_empty() {
            return Err(CliError::NoPassword);
        }
        password::check_strength(&password).map_err(AccountError::WeakPassword)?;
        Ok((password, false))
    }

    async fn hash(&self, password: String) -> Result<String, CliError> {
        let hashing = self.hashing.clone();
        Ok(tokio::task::spawn_blocking(move || hashing.hash(&password))
            .await
            .map_err(|e| AccountError::Hashing(e.to_string()))??)
    }

    /// Run `full_stack users <command>`.
    pub async fn users(&mut self, command: &UsersCommand) -> Result<(), CliError> {
        let store = self.store;
        match command {
            UsersCommand::Add {
                email,
                roles,
                password_stdin,
            } => {
                let (password, generated) = self.password(*password_stdin)?;
                let hash = self.hash(password.clone()).await?;
                let user = store.add_user(email, &hash, roles, &self.origin).await?;
                writeln!(
                    self.out,
                    "added {} (id {}) with roles: {}",
                    user.email,
                    user.id,
                    user.roles.join(", ")
                )?;
                if generated {
                    writeln!(self.out, "password: {password}")?;
                    writeln!(
                        self.out,
                        "(shown once: hand it over now; it is stored only hashed)"
                    )?;
                }
            }
            UsersCommand::List { json } => {
                let users = store.list_users().await?;
                if *json {
                    let users: Vec<_> = users
                        .iter()
                        .map(super::users::UserRecord::to_json)
                        .collect();
                    writeln!(self.out, "{}", json!({ "users": users }))?;
                } else {
                    let rows = users
                        .iter()
                        .map(|u| {
                            [
                                u.email.clone(),
                                u.roles.join(","),
                                if u.disabled { "disabled" } else { "enabled" }.to_owned(),
                                u.last_login_at
                                    .map_or_else(|| "never".to_owned(), super::rfc3339),
                                u.id.clone(),
                            ]
                        })
                        .collect::<Vec<_>>();
                    table(
                        self.out,
                        ["EMAIL", "ROLES", "STATE", "LAST LOGIN", "ID"],
                        &rows,
                    )?;
                }
            }
            UsersCommand::Passwd {
                email,
                password_stdin,
            } => {
                // Fail on an unknown user before anything is hashed.
                store.user(UserKey::Email(email)).await?;
                let (password, generated) = self.password(*password_stdin)?;
                let hash = self.hash(password.clone()).await?;
                let user = store
                    .set_password(UserKey::Email(email), &hash, generated, &self.origin)
                    .await?;
                writeln!(
                    self.out,
                    "password of {} changed; their sessions ended",
                    user.email
                )?;
                if generated {
                    writeln!(self.out, "password: {password}")?;
                    writeln!(
                        self.out,
                        "(shown once: hand it over now; it is stored only hashed)"
                    )?;
                }
            }
            UsersCommand::Roles { email, roles } => {
                let (user, before) = store
                    .set_roles(UserKey::Email(email), roles, &self.origin)
                    .await?;
                writeln!(
                    self.out,
                    "roles of {}: {} (were: {})",
                    user.email,
                    user.roles.join(", "),
                    if before.is_empty() {
                        "none".to_owned()
                    } else {
                        before.join(", ")
                    }
                )?;
            }
            UsersCommand::Disable { email } => {
                let user = store
                    .set_disabled(UserKey::Email(email), true, &self.origin)
                    .await?;
                writeln!(self.out, "{} disabled; their sessions ended", user.email)?;
            }
            UsersCommand::Enable { email } => {
                let user = store
                    .set_disabled(UserKey::Email(email), false, &self.origin)
                    .await?;
                writeln!(self.out, "{} enabled", user.email)?;
            }
            UsersCommand::Remove { email } => {
                let user = store
                    .remove_user(UserKey::Email(email), AdminGuard::Off, &self.origin)
                    .await?;
                writeln!(self.out, "{} removed", user.email)?;
            }
        }
        // The command line may take the last administrator away (it is also the way
        // back); it says so.
        if matches!(
            command,
            UsersCommand::Roles { .. } | UsersCommand::Disable { .. } | UsersCommand::Remove { .. }
        ) && store.bootstrap_required().await?
        {
            writeln!(self.out, "note: {}", super::seed::NO_ADMINISTRATOR)?;
        }
        Ok(())
    }

    /// Run `full_stack roles <command>`.
    pub async fn roles(&mut self, command: &RolesCommand) -> Result<(), CliError> {
        let store = self.store;
        match command {
            RolesCommand::List { json } => {
                let roles = store.list_roles().await?;
                if *json {
                    writeln!(self.out, "{}", json!({ "roles": roles }))?;
                } else {
                    let rows = roles
                        .iter()
                        .map(|r| {
                            [
                                r.name.clone(),
                                r.permissions.join(","),
                                r.users.to_string(),
                                r.description.clone().unwrap_or_default(),
                            ]
                        })
                        .collect::<Vec<_>>();
                    table(
                        self.out,
                        ["NAME", "PERMISSIONS", "USERS", "DESCRIPTION"],
                        &rows,
                    )?;
                }
            }
            RolesCommand::Add {
                name,
                permissions,
                description,
            } => {
                let role = store
                    .add_role(name, permissions, description.as_deref(), &self.origin)
                    .await?;
                writeln!(
                    self.out,
                    "added role {} granting: {}",
                    role.name,
                    role.permissions.join(", ")
                )?;
            }
            RolesCommand::Remove { name } => {
                store.remove_role(name, &self.origin).await?;
                writeln!(self.out, "removed role {name}")?;
            }
        }
        Ok(())
    }
}

/// A plain-text table: a header, then the rows, columns padded to their widest cell.
fn table<const N: usize>(
    out: &mut dyn Write,
    header: [&str; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}
