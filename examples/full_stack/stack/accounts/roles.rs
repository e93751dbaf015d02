//! Roles and their permission grants: list, add, remove (not while anyone holds it).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::json;
use sqlx::Row;

use super::audit::{self, AuditAction, AuditEvent};
use super::{AccountError, AccountStore, Origin, bump_changes};

/// A role as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RoleRecord {
    /// Its name.
    pub name: String,
    /// Its permission grants, sorted.
    pub permissions: Vec<String>,
    /// What it is for.
    pub description: Option<String>,
    /// How many users hold it.
    pub users: i64,
}

/// The longest role name.
pub const MAX_ROLE_NAME: usize = 64;
/// The longest role description.
pub const MAX_DESCRIPTION: usize = 500;

/// Whether `name` is a role name we accept: 1 to 64 of `a-z`, `0-9`, `_`, `-`, `.`.
pub fn valid_role_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROLE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
}

impl AccountStore {
    /// Every role, by name, with its permissions and number of holders.
    pub async fn list_roles(&self) -> Result<Vec<RoleRecord>, AccountError> {
        let pool = self.db.pool();
        let mut permissions: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in
            sqlx::query("SELECT role, permission FROM gateway_role_permissions ORDER BY permission")
                .fetch_all(pool)
                .await?
        {
            permissions
                .entry(row.try_get("role")?)
                .or_default()
                .push(row.try_get("permission")?);
        }
        let mut holders: BTreeMap<String, i64> = BTreeMap::new();
        for row in sqlx::query("SELECT role, COUNT(*) AS n FROM gateway_user_roles GROUP BY role")
            .fetch_all(pool)
            .await?
        {
            holders.insert(row.try_get("role")?, row.try_get("n")?);
        }
        sqlx::query("SELECT name, description FROM gateway_roles ORDER BY name")
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| {
                let name: String = row.try_get("name")?;
                Ok(RoleRecord {
                    permissions: permissions.remove(&name).unwrap_or_default(),
                    users: holders.get(&name).copied().unwrap_or(0),
                    description: row.try_get("description")?,
                    name,
                })
            })
            .collect()
    }

    /// Add a role granting `permissions`.
    pub async fn add_role(
        &self,
        name: &str,
        permissions: &[String],
        description: Option<&str>,
        origin: &Origin,
    ) -> Result<RoleRecord, AccountError> {
        let name = name.trim();
        if !valid_role_name(name) {
            return Err(AccountError::InvalidRoleName(name.to_owned()));
        }
        let permissions: BTreeSet<String> =
            permissions.iter().map(|p| p.trim().to_owned()).collect();
        if let Some(bad) = permissions
            .iter()
            .find(|p| !pulse_core::rbac::is_valid_grant(p))
        {
            return Err(AccountError::InvalidPermission(bad.clone()));
        }
        let description = description
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| d.chars().take(MAX_DESCRIPTION).collect::<String>());
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let taken: Option<String> =
            sqlx::query_scalar("SELECT name FROM gateway_roles WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        if taken.is_some() {
            return Err(AccountError::DuplicateRole(name.to_owned()));
        }
        sqlx::query(
            "INSERT INTO gateway_roles (name, description, created_at) VALUES ($1, $2, $3)",
        )
        .bind(name)
        .bind(description.clone())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for permission in &permissions {
            sqlx::query("INSERT INTO gateway_role_permissions (role, permission) VALUES ($1, $2)")
                .bind(name)
                .bind(permission)
                .execute(&mut *tx)
                .await?;
        }
        let permissions: Vec<String> = permissions.into_iter().collect();
        let event = AuditEvent::new(
            AuditAction::RoleAdded,
            origin,
            Some(name),
            json!({"permissions": permissions, "description": description}),
        );
        audit::append(&mut tx, &event, now).await?;
        bump_changes(&mut tx).await?;
        tx.commit().await?;
        Ok(RoleRecord {
            name: name.to_owned(),
            permissions,
            description,
            users: 0,
        })
    }

    /// Remove a role nobody holds.
    pub async fn remove_role(
        &self,
        name: &str,
        origin: &Origin,
    ) -> Result<RoleRecord, AccountError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let description: Option<Option<String>> =
            sqlx::query_scalar("SELECT description FROM gateway_roles WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(description) = description else {
            let known = sqlx::query_scalar("SELECT name FROM gateway_roles ORDER BY name")
                .fetch_all(&mut *tx)
                .await?;
            return Err(AccountError::UnknownRole {
                name: name.to_owned(),
                known,
            });
        };
        let users: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM gateway_user_roles WHERE role = $1")
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
        if users > 0 {
            return Err(AccountError::RoleInUse {
                name: name.to_owned(),
                users,
            });
        }
        let permissions: Vec<String> = sqlx::query_scalar(
            "SELECT permission FROM gateway_role_permissions WHERE role = $1 ORDER BY permission",
        )
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM gateway_role_permissions WHERE role = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM gateway_roles WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let event = AuditEvent::new(
            AuditAction::RoleRemoved,
            origin,
            Some(name),
            json!({"permissions": permissions}),
        );
        audit::append(&mut tx, &event, now).await?;
        bump_changes(&mut tx).await?;
        tx.commit().await?;
        Ok(RoleRecord {
            name: name.to_owned(),
            permissions,
            description,
            users: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{hashing, store};
    use super::*;

    #[tokio::test]
    async fn roles_are_added_listed_and_removed_only_when_unused() {
        let store = store().await;
        let origin = Origin::actor("cli:test");
        let added = store
            .add_role(
                "auditor",
                &[
                    "etl.access".to_owned(),
                    "audit.*".to_owned(),
                    "etl.access".to_owned(),
                ],
                Some("reads the trail"),
                &origin,
            )
            .await
            .unwrap();
        assert_eq!(added.permissions, ["audit.*", "etl.access"]);
        assert!(matches!(
            store.add_role("auditor", &[], None, &origin).await,
            Err(AccountError::DuplicateRole(_))
        ));
        assert!(matches!(
            store.add_role("Bad Name", &[], None, &origin).await,
            Err(AccountError::InvalidRoleName(_))
        ));
        assert!(matches!(
            store
                .add_role("x", &["etl..run".to_owned()], None, &origin)
                .await,
            Err(AccountError::InvalidPermission(_))
        ));
        let hash = hashing().hash("correct horse").unwrap();
        store
            .add_user("a@b.c", &hash, &["auditor".to_owned()], &origin)
            .await
            .unwrap();
        let listed = store.list_roles().await.unwrap();
        let auditor = listed.iter().find(|r| r.name == "auditor").unwrap();
        assert_eq!(auditor.users, 1);
        assert_eq!(auditor.description.as_deref(), Some("reads the trail"));
        assert!(matches!(
            store.remove_role("auditor", &origin).await,
            Err(AccountError::RoleInUse { users: 1, .. })
        ));
        assert!(matches!(
            store.remove_role("nobody", &origin).await,
            Err(AccountError::UnknownRole { .. })
        ));
        store
            .set_roles(super::super::users::UserKey::Email("a@b.c"), &[], &origin)
            .await
            .unwrap();
        store.remove_role("auditor", &origin).await.unwrap();
        assert!(
            store
                .list_roles()
                .await
                .unwrap()
                .iter()
                .all(|r| r.name != "auditor")
        );
    }
}
