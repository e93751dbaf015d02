//! Users: add, list, change password, roles and state, remove — each change audited,
//! and each that takes access away (password, roles, disable, removal) stamps the user
//! so that every token issued before it stops working at once.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::json;
use sqlx::{Any, Row, Transaction};

use super::audit::{self, AuditAction, AuditEvent};
use super::{AccountError, AccountStore, Origin, bump_changes};

/// The longest e-mail accepted (RFC 5321's path limit).
pub const MAX_EMAIL_BYTES: usize = 254;

/// A user as listed (never with the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    /// Stable id (the tokens' `sub`, a run's `requested_by`).
    pub id: String,
    /// Login e-mail, lower-case.
    pub email: String,
    /// Role names, sorted.
    pub roles: Vec<String>,
    /// Whether sign-in is refused.
    pub disabled: bool,
    /// When added (ms since the epoch).
    pub created_at: i64,
    /// The last successful sign-in (ms since the epoch).
    pub last_login_at: Option<i64>,
}

/// A user as the admin API (and `users list --json`) shows it: RFC 3339 times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UserView {
    /// Stable id (the tokens' `sub`, a run's `requested_by`).
    pub id: String,
    /// Login e-mail, lower-case.
    pub email: String,
    /// Role names, sorted.
    pub roles: Vec<String>,
    /// Whether sign-in is refused.
    pub disabled: bool,
    /// When added.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The last successful sign-in.
    #[schema(format = DateTime)]
    pub last_login_at: Option<String>,
}

impl UserRecord {
    /// The API's (and `users list --json`'s) form: RFC 3339 times.
    pub fn to_view(&self) -> UserView {
        UserView {
            id: self.id.clone(),
            email: self.email.clone(),
            roles: self.roles.clone(),
            disabled: self.disabled,
            created_at: super::rfc3339(self.created_at),
            last_login_at: self.last_login_at.map(super::rfc3339),
        }
    }

    /// [`UserRecord::to_view`] as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.to_view()).unwrap_or_default()
    }
}

/// What a login checks.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The user's id.
    pub id: String,
    /// The Argon2id PHC string.
    pub password_hash: String,
    /// Whether sign-in is refused.
    pub disabled: bool,
}

/// A user named by id (the API) or e-mail (the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKey<'a> {
    /// By id.
    Id(&'a str),
    /// By e-mail (normalised before the lookup).
    Email(&'a str),
}

impl std::fmt::Display for UserKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => f.write_str(id),
            Self::Email(email) => f.write_str(email),
        }
    }
}

/// A change of a user's roles and/or state (`None`: left as it is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserUpdate {
    /// The new roles, all of them.
    pub roles: Option<Vec<String>>,
    /// Disabled or enabled.
    pub disabled: Option<bool>,
}

/// Whether a change may leave the gateway with no enabled user holding `users.manage`
/// (then nobody can administer it from the browser).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminGuard {
    /// Refuse such a change ([`AccountError::LastAdministrator`]): the admin API.
    KeepOne,
    /// Allow it: the command line, which is also the way back
    /// (`full_stack users add EMAIL --role admin`).
    Off,
}

/// `email` trimmed and lower-cased, if it is an address we accept: at most 254 bytes,
/// one `@` between a non-empty local part and a dotted-or-not domain, no spaces or
/// control characters.
pub fn normalise_email(email: &str) -> Result<String, AccountError> {
    let email = email.trim().to_lowercase();
    if email.len() > MAX_EMAIL_BYTES {
        return Err(AccountError::InvalidEmail("at most 254 bytes"));
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err(AccountError::InvalidEmail("it needs an @"));
    };
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return Err(AccountError::InvalidEmail("name@domain, with one @"));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AccountError::InvalidEmail(
            "no spaces or control characters",
        ));
    }
    if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
        return Err(AccountError::InvalidEmail("the domain is malformed"));
    }
    Ok(email)
}

/// The user row `key` names, inside `tx`.
async fn find(
    tx: &mut Transaction<'static, Any>,
    key: UserKey<'_>,
) -> Result<UserRecord, AccountError> {
    let (column, value) = match key {
        UserKey::Id(id) => ("id", id.to_owned()),
        UserKey::Email(email) => (
            "email",
            normalise_email(email).map_err(|_| AccountError::UnknownUser(email.to_owned()))?,
        ),
    };
    let row = sqlx::query(&format!(
        "SELECT id, email, disabled, created_at, last_login_at FROM gateway_users WHERE {column} = $1"
    ))
    .bind(&value)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| AccountError::UnknownUser(key.to_string()))?;
    let id: String = row.try_get("id")?;
    let roles = roles_of(tx, &id).await?;
    Ok(UserRecord {
        id,
        email: row.try_get("email")?,
        roles,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        created_at: row.try_get("created_at")?,
        last_login_at: row.try_get("last_login_at")?,
    })
}

async fn roles_of(
    tx: &mut Transaction<'static, Any>,
    user_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT role FROM gateway_user_roles WHERE user_id = $1 ORDER BY role")
        .bind(user_id)
        .fetch_all(&mut **tx)
        .await
}

/// Fail unless every role of `roles` exists; the roles, sorted and without duplicates.
pub(crate) async fn existing_roles(
    tx: &mut Transaction<'static, Any>,
    roles: &[String],
) -> Result<Vec<String>, AccountError> {
    let known: Vec<String> = sqlx::query_scalar("SELECT name FROM gateway_roles ORDER BY name")
        .fetch_all(&mut **tx)
        .await?;
    let wanted: BTreeSet<String> = roles.iter().map(|r| r.trim().to_owned()).collect();
    if let Some(unknown) = wanted.iter().find(|r| !known.contains(r)) {
        return Err(AccountError::UnknownRole {
            name: unknown.clone(),
            known,
        });
    }
    Ok(wanted.into_iter().collect())
}

async fn set_user_roles(
    tx: &mut Transaction<'static, Any>,
    user_id: &str,
    roles: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM gateway_user_roles WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    for role in roles {
        sqlx::query("INSERT INTO gateway_user_roles (user_id, role) VALUES ($1, $2)")
            .bind(user_id)
            .bind(role)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Every token of `user_id` issued before now stops working: the next whole second
/// becomes the user's "valid after" (token `iat`s are whole seconds; the gateway issues
/// new tokens no earlier than it). The stamp always moves forward: a token issued after
/// an earlier change of the same second carries that change's stamp as its `iat`, so a
/// second change moves the stamp one second past it. Refresh tokens of the user are revoked when
/// `end_sessions` (a password change, a disable), not on a role change: the next
/// refresh then carries the new roles.
pub(crate) async fn stamp(
    tx: &mut Transaction<'static, Any>,
    user_id: &str,
    now: i64,
    end_sessions: bool,
) -> Result<(), sqlx::Error> {
    let valid_after = (now.div_euclid(1000) + 1) * 1000;
    sqlx::query(
        "INSERT INTO gateway_user_stamps (user_id, valid_after) VALUES ($1, $2) \
         ON CONFLICT (user_id) DO UPDATE SET valid_after = CASE \
         WHEN excluded.valid_after > gateway_user_stamps.valid_after \
         THEN excluded.valid_after ELSE gateway_user_stamps.valid_after + 1000 END",
    )
    .bind(user_id)
    .bind(valid_after)
    .execute(&mut **tx)
    .await?;
    if end_sessions {
        sqlx::query(
            "UPDATE gateway_refresh_tokens SET revoked_at = $2 \
             WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(user_id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    bump_changes(tx).await
}

impl AccountStore {
    /// Every user, by e-mail.
    pub async fn list_users(&self) -> Result<Vec<UserRecord>, AccountError> {
        let pool = self.db.pool();
        let mut roles: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in sqlx::query("SELECT user_id, role FROM gateway_user_roles ORDER BY role")
            .fetch_all(pool)
            .await?
        {
            roles
                .entry(row.try_get("user_id")?)
                .or_default()
                .push(row.try_get("role")?);
        }
        sqlx::query(
            "SELECT id, email, disabled, created_at, last_login_at FROM gateway_users ORDER BY email",
        )
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| {
            let id: String = row.try_get("id")?;
            Ok(UserRecord {
                roles: roles.remove(&id).unwrap_or_default(),
                id,
                email: row.try_get("email")?,
                disabled: row.try_get::<i64, _>("disabled")? != 0,
                created_at: row.try_get("created_at")?,
                last_login_at: row.try_get("last_login_at")?,
            })
        })
        .collect()
    }

    /// The user `key` names.
    pub async fn user(&self, key: UserKey<'_>) -> Result<UserRecord, AccountError> {
        let mut tx = self.db.pool().begin().await?;
        let user = find(&mut tx, key).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// The credentials of the account `email` (already normalised), if it exists.
    pub async fn credentials(&self, email: &str) -> Result<Option<Credentials>, AccountError> {
        let row =
            sqlx::query("SELECT id, password_hash, disabled FROM gateway_users WHERE email = $1")
                .bind(email)
                .fetch_optional(self.db.pool())
                .await?;
        row.map(|row| {
            Ok(Credentials {
                id: row.try_get("id")?,
                password_hash: row.try_get("password_hash")?,
                disabled: row.try_get::<i64, _>("disabled")? != 0,
            })
        })
        .transpose()
    }

    /// Add a user with an already hashed password and existing roles.
    pub async fn add_user(
        &self,
        email: &str,
        password_hash: &str,
        roles: &[String],
        origin: &Origin,
    ) -> Result<UserRecord, AccountError> {
        let email = normalise_email(email)?;
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let taken: Option<String> =
            sqlx::query_scalar("SELECT id FROM gateway_users WHERE email = $1")
                .bind(&email)
                .fetch_optional(&mut *tx)
                .await?;
        if taken.is_some() {
            return Err(AccountError::DuplicateEmail(email));
        }
        let roles = existing_roles(&mut tx, roles).await?;
        let id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO gateway_users (id, email, password_hash, disabled, created_at, updated_at) \
             VALUES ($1, $2, $3, 0, $4, $4)",
        )
        .bind(&id)
        .bind(&email)
        .bind(password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        set_user_roles(&mut tx, &id, &roles).await?;
        let event = AuditEvent::new(
            AuditAction::UserAdded,
            origin,
            Some(&id),
            json!({"email": email, "roles": roles}),
        );
        audit::append(&mut tx, &event, now).await?;
        bump_changes(&mut tx).await?;
        tx.commit().await?;
        Ok(UserRecord {
            id,
            email,
            roles,
            disabled: false,
            created_at: now,
            last_login_at: None,
        })
    }

    /// Replace the password hash of `key`: every session and token of the user ends.
    pub async fn set_password(
        &self,
        key: UserKey<'_>,
        password_hash: &str,
        generated: bool,
        origin: &Origin,
    ) -> Result<UserRecord, AccountError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let user = find(&mut tx, key).await?;
        sqlx::query("UPDATE gateway_users SET password_hash = $2, updated_at = $3 WHERE id = $1")
            .bind(&user.id)
            .bind(password_hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        stamp(&mut tx, &user.id, now, true).await?;
        let event = AuditEvent::new(
            AuditAction::PasswordChanged,
            origin,
            Some(&user.id),
            json!({"email": user.email, "generated": generated}),
        );
        audit::append(&mut tx, &event, now).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Give `key` exactly `roles` (which must exist); the user's older tokens end.
    /// Returns the user as it is now and the roles it had. (The command line's: it may
    /// leave the gateway without an administrator, see [`AdminGuard`].)
    pub async fn set_roles(
        &self,
        key: UserKey<'_>,
        roles: &[String],
        origin: &Origin,
    ) -> Result<(UserRecord, Vec<String>), AccountError> {
        let update = UserUpdate {
            roles: Some(roles.to_vec()),
            disabled: None,
        };
        self.update_user(key, &update, AdminGuard::Off, origin)
            .await
    }

    /// Disable (every session and token ends) or enable `key` (the command line's).
    pub async fn set_disabled(
        &self,
        key: UserKey<'_>,
        disabled: bool,
        origin: &Origin,
    ) -> Result<UserRecord, AccountError> {
        let update = UserUpdate {
            roles: None,
            disabled: Some(disabled),
        };
        Ok(self
            .update_user(key, &update, AdminGuard::Off, origin)
            .await?
            .0)
    }

    /// Change the roles and/or the state of `key` in one transaction, each change
    /// audited; with [`AdminGuard::KeepOne`], refused (and nothing changed) when it
    /// would leave no enabled user holding `users.manage`. Returns the user as it is now
    /// and the roles it had.
    pub async fn update_user(
        &self,
        key: UserKey<'_>,
        update: &UserUpdate,
        guard: AdminGuard,
        origin: &Origin,
    ) -> Result<(UserRecord, Vec<String>), AccountError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        self.db.lock_administrators(&mut tx, guard).await?;
        let mut user = find(&mut tx, key).await?;
        let before = user.roles.clone();
        if let Some(roles) = &update.roles {
            let roles = existing_roles(&mut tx, roles).await?;
            if before != roles {
                set_user_roles(&mut tx, &user.id, &roles).await?;
                stamp(&mut tx, &user.id, now, false).await?;
                let event = AuditEvent::new(
                    AuditAction::UserRolesChanged,
                    origin,
                    Some(&user.id),
                    json!({"email": user.email, "from": before, "to": roles}),
                );
                audit::append(&mut tx, &event, now).await?;
                user.roles = roles;
            }
        }
        if let Some(disabled) = update.disabled
            && user.disabled != disabled
        {
            sqlx::query("UPDATE gateway_users SET disabled = $2, updated_at = $3 WHERE id = $1")
                .bind(&user.id)
                .bind(i64::from(disabled))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            if disabled {
                stamp(&mut tx, &user.id, now, true).await?;
            } else {
                bump_changes(&mut tx).await?;
            }
            let action = if disabled {
                AuditAction::UserDisabled
            } else {
                AuditAction::UserEnabled
            };
            let event =
                AuditEvent::new(action, origin, Some(&user.id), json!({"email": user.email}));
            audit::append(&mut tx, &event, now).await?;
            user.disabled = disabled;
        }
        check_guard(&mut tx, guard).await?;
        tx.commit().await?;
        Ok((user, before))
    }

    /// Remove `key`: its roles and refresh tokens go with it, its tokens end.
    /// With [`AdminGuard::KeepOne`], refused when no other enabled user holds
    /// `users.manage`.
    pub async fn remove_user(
        &self,
        key: UserKey<'_>,
        guard: AdminGuard,
        origin: &Origin,
    ) -> Result<UserRecord, AccountError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        self.db.lock_administrators(&mut tx, guard).await?;
        let user = find(&mut tx, key).await?;
        stamp(&mut tx, &user.id, now, true).await?;
        sqlx::query("DELETE FROM gateway_users WHERE id = $1")
            .bind(&user.id)
            .execute(&mut *tx)
            .await?;
        let event = AuditEvent::new(
            AuditAction::UserRemoved,
            origin,
            Some(&user.id),
            json!({"email": user.email, "roles": user.roles}),
        );
        audit::append(&mut tx, &event, now).await?;
        check_guard(&mut tx, guard).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// The permission grants of `roles`.
    pub async fn permissions_of(&self, roles: &[String]) -> Result<Vec<String>, AccountError> {
        let mut permissions = BTreeSet::new();
        for role in roles {
            let grants: Vec<String> = sqlx::query_scalar(
                "SELECT permission FROM gateway_role_permissions WHERE role = $1",
            )
            .bind(role)
            .fetch_all(self.db.pool())
            .await?;
            permissions.extend(grants);
        }
        Ok(permissions.into_iter().collect())
    }

    /// Whether no enabled user holds `users.manage`: then nobody can administer the
    /// gateway from the browser, and the first administrator must be created with the CLI.
    pub async fn bootstrap_required(&self) -> Result<bool, AccountError> {
        let mut tx = self.db.pool().begin().await?;
        let administrators = administrators(&mut tx).await?;
        tx.commit().await?;
        Ok(administrators == 0)
    }
}

/// How many enabled users hold `users.manage` (through any grant that covers it).
async fn administrators(tx: &mut Transaction<'static, Any>) -> Result<usize, sqlx::Error> {
    let grants = sqlx::query(
        "SELECT DISTINCT u.id, rp.permission FROM gateway_users u \
         JOIN gateway_user_roles ur ON ur.user_id = u.id \
         JOIN gateway_role_permissions rp ON rp.role = ur.role \
         WHERE u.disabled = 0",
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut holders = BTreeSet::new();
    for row in grants {
        let permission: String = row.try_get("permission")?;
        if pulse_core::rbac::grants(&permission, super::MANAGE_USERS) {
            holders.insert(row.try_get::<String, _>("id")?);
        }
    }
    Ok(holders.len())
}

/// Fail (so that the transaction is rolled back) if `guard` asks to keep an
/// administrator and the transaction's changes left none.
async fn check_guard(
    tx: &mut Transaction<'static, Any>,
    guard: AdminGuard,
) -> Result<(), AccountError> {
    if guard == AdminGuard::KeepOne && administrators(tx).await? == 0 {
        return Err(AccountError::LastAdministrator);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{hashing, store};
    use super::*;

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|r| (*r).to_owned()).collect()
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalise_email("  Ada@Example.ORG ").unwrap(),
            "ada@example.org"
        );
        for bad in [
            "",
            "ada",
            "@example.org",
            "ada@",
            "a b@c.d",
            "a@b@c",
            "a@.b",
            "a@b..c",
        ] {
            assert!(normalise_email(bad).is_err(), "{bad}");
        }
        assert!(normalise_email(&format!("{}@b.c", "a".repeat(251))).is_err());
    }

    #[tokio::test]
    async fn users_are_added_listed_changed_and_removed() {
        let store = store().await;
        let origin = Origin::actor("cli:test");
        let hash = hashing().hash("correct horse").unwrap();
        let ada = store
            .add_user(
                "Ada@Example.org",
                &hash,
                &roles(&["viewer", "operator"]),
                &origin,
            )
            .await
            .unwrap();
        assert_eq!(ada.email, "ada@example.org");
        assert_eq!(ada.roles, ["operator", "viewer"]);
        let duplicate = store.add_user("ada@example.org", &hash, &[], &origin).await;
        assert!(
            matches!(duplicate, Err(AccountError::DuplicateEmail(_))),
            "{duplicate:?}"
        );
        let unknown = store
            .add_user("bob@example.org", &hash, &roles(&["wizard"]), &origin)
            .await;
        match unknown {
            Err(AccountError::UnknownRole { name, known }) => {
                assert_eq!(name, "wizard");
                assert_eq!(known, ["admin", "operator", "viewer"]);
            }
            other => panic!("{other:?}"),
        }
        let (after, before) = store
            .set_roles(
                UserKey::Email("ADA@example.org"),
                &roles(&["admin"]),
                &origin,
            )
            .await
            .unwrap();
        assert_eq!(
            (after.roles.as_slice(), before.len()),
            (&["admin".to_owned()][..], 2)
        );
        assert!(!store.bootstrap_required().await.unwrap());
        let disabled = store
            .set_disabled(UserKey::Id(&ada.id), true, &origin)
            .await
            .unwrap();
        assert!(disabled.disabled);
        // The only administrator is disabled: nobody can administer from the browser.
        assert!(store.bootstrap_required().await.unwrap());
        assert_eq!(store.list_users().await.unwrap().len(), 1);
        store
            .remove_user(UserKey::Id(&ada.id), AdminGuard::Off, &origin)
            .await
            .unwrap();
        assert!(store.list_users().await.unwrap().is_empty());
        assert!(matches!(
            store.user(UserKey::Email("ada@example.org")).await,
            Err(AccountError::UnknownUser(_))
        ));
    }
    async fn stamp_of(store: &AccountStore, id: &str) -> i64 {
        sqlx::query_scalar("SELECT valid_after FROM gateway_user_stamps WHERE user_id = $1")
            .bind(id)
            .fetch_one(store.database().pool())
            .await
            .unwrap()
    }

    /// A token issued right after a change carries the change's stamp as its `iat`; a
    /// second change in the same second must still end it.
    #[tokio::test]
    async fn each_change_moves_the_stamp_forward_even_within_a_second() {
        let store = store().await.with_clock(|| 5_000_400);
        let origin = Origin::actor("cli:test");
        let hash = hashing().hash("correct horse").unwrap();
        let ada = store
            .add_user("ada@example.org", &hash, &roles(&["operator"]), &origin)
            .await
            .unwrap();
        store
            .set_password(UserKey::Id(&ada.id), &hash, false, &origin)
            .await
            .unwrap();
        assert_eq!(stamp_of(&store, &ada.id).await, 5_001_000);
        store
            .set_roles(UserKey::Id(&ada.id), &roles(&["viewer"]), &origin)
            .await
            .unwrap();
        assert_eq!(stamp_of(&store, &ada.id).await, 5_002_000);
    }

    /// With the guard, no change leaves nobody holding users.manage, and a refused
    /// change changes nothing; without it (the CLI), it may.
    #[tokio::test]
    async fn the_guard_keeps_an_administrator() {
        let store = store().await;
        let origin = Origin::actor("cli:test");
        let hash = hashing().hash("correct horse").unwrap();
        store
            .add_role("user-admin", &["users.*".to_owned()], None, &origin)
            .await
            .unwrap();
        let a = store
            .add_user("a@example.org", &hash, &roles(&["admin"]), &origin)
            .await
            .unwrap();
        let b = store
            .add_user("b@example.org", &hash, &roles(&["user-admin"]), &origin)
            .await
            .unwrap();
        let guard = AdminGuard::KeepOne;
        let disable = UserUpdate {
            roles: None,
            disabled: Some(true),
        };
        // Two administrators: one may go.
        store
            .update_user(UserKey::Id(&a.id), &disable, guard, &origin)
            .await
            .unwrap();
        // The last one may not: disabled, demoted (even with another change), removed.
        let demote = UserUpdate {
            roles: Some(roles(&["viewer"])),
            disabled: Some(false),
        };
        for update in [&disable, &demote] {
            let refused = store
                .update_user(UserKey::Id(&b.id), update, guard, &origin)
                .await;
            assert!(
                matches!(refused, Err(AccountError::LastAdministrator)),
                "{refused:?}"
            );
        }
        let refused = store.remove_user(UserKey::Id(&b.id), guard, &origin).await;
        assert!(matches!(refused, Err(AccountError::LastAdministrator)));
        let b_now = store.user(UserKey::Id(&b.id)).await.unwrap();
        assert_eq!(
            (b_now.roles, b_now.disabled),
            (roles(&["user-admin"]), false)
        );
        assert!(!store.bootstrap_required().await.unwrap());
        // Enabling the other one again is fine, and then b may go.
        let enable = UserUpdate {
            roles: None,
            disabled: Some(false),
        };
        store
            .update_user(UserKey::Id(&a.id), &enable, guard, &origin)
            .await
            .unwrap();
        store
            .remove_user(UserKey::Id(&b.id), guard, &origin)
            .await
            .unwrap();
        // The command line is not guarded (it is the way back).
        store
            .remove_user(UserKey::Id(&a.id), AdminGuard::Off, &origin)
            .await
            .unwrap();
        assert!(store.bootstrap_required().await.unwrap());
    }
}
