//! First start: the demo's users (with `PULSE_DEMO`), or the hint how to create the
//! first administrator.

use super::password::PasswordHashing;
use super::{AccountError, AccountStore, Origin};

/// How to create the first administrator (the log, the banner and `GET /api/auth/setup`).
pub const SETUP_HINT: &str = "full_stack users add EMAIL --role admin";

/// The log line of a gateway that nobody can administer yet.
pub const NO_ADMINISTRATOR: &str =
    "no administrator yet: run  full_stack users add you@example.com --role admin";

/// The demo's users: e-mail, password, role. Their passwords are far too weak for the
/// strength rules, which only this seeding bypasses.
pub const DEMO_USERS: [(&str, &str, &str); 2] = [
    ("admin@pulse.local", "admin", "admin"),
    ("viewer@pulse.local", "viewer", "viewer"),
];

/// The demo's roles: name, permissions, description.
pub const DEMO_ROLES: [(&str, &[&str], &str); 3] = [
    ("admin", &["*"], "every permission"),
    (
        "operator",
        &["etl.access", "etl.jobs.run"],
        "may run and cancel jobs",
    ),
    ("viewer", &["etl.access"], "read-only"),
];

/// Seed the demo roles and users that are missing; what exists is left as it is
/// (a changed password stays changed). Returns the users added.
pub async fn seed_demo(
    store: &AccountStore,
    hashing: &PasswordHashing,
) -> Result<Vec<String>, AccountError> {
    let origin = Origin::actor("system:demo");
    let roles = store.list_roles().await?;
    for (name, permissions, description) in DEMO_ROLES {
        if roles.iter().all(|r| r.name != name) {
            let permissions: Vec<String> = permissions.iter().map(|p| (*p).to_owned()).collect();
            match store
                .add_role(name, &permissions, Some(description), &origin)
                .await
            {
                // Another process seeding at the same moment.
                Ok(_) | Err(AccountError::DuplicateRole(_)) => {}
                Err(error) => return Err(error),
            }
        }
    }
    let mut added = Vec::new();
    for (email, password, role) in DEMO_USERS {
        if store.credentials(email).await?.is_some() {
            continue;
        }
        let hashing = hashing.clone();
        let hash = tokio::task::spawn_blocking(move || hashing.hash(password))
            .await
            .map_err(|e| AccountError::Hashing(e.to_string()))??;
        match store
            .add_user(email, &hash, &[role.to_owned()], &origin)
            .await
        {
            Ok(_) => added.push(email.to_owned()),
            Err(AccountError::DuplicateEmail(_)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(added)
}

/// Log whether the gateway can be administered; `true` when nobody can yet.
pub async fn announce_bootstrap(store: &AccountStore) -> Result<bool, AccountError> {
    let required = store.bootstrap_required().await?;
    if required {
        tracing::warn!("{NO_ADMINISTRATOR}");
    }
    Ok(required)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{hashing, store};
    use super::*;

    #[tokio::test]
    async fn seeding_twice_adds_the_demo_once_and_keeps_changes() {
        let store = store().await;
        assert!(store.bootstrap_required().await.unwrap());
        let added = seed_demo(&store, &hashing()).await.unwrap();
        assert_eq!(added, ["admin@pulse.local", "viewer@pulse.local"]);
        assert!(!store.bootstrap_required().await.unwrap());
        let admin = store
            .credentials("admin@pulse.local")
            .await
            .unwrap()
            .unwrap();
        assert!(seed_demo(&store, &hashing()).await.unwrap().is_empty());
        let again = store
            .credentials("admin@pulse.local")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(admin.password_hash, again.password_hash);
        assert_eq!(store.list_users().await.unwrap().len(), 2);
    }
}
