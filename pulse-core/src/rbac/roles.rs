//! Roles: named sets of permission grants, loadable with serde.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::is_valid_grant;
use crate::identity::Identity;

/// A role: the permission grants it confers (dotted names, whole-segment wildcards
/// allowed, see [`grants`](super::grants)).
///
/// Deserialising refuses unknown fields and malformed grants, so a typo in a
/// configuration file fails at start-up instead of silently granting nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RoleRepr")]
#[non_exhaustive]
pub struct Role {
    /// What the role is for (documentation only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The permission grants.
    pub permissions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleRepr {
    #[serde(default)]
    description: Option<String>,
    permissions: Vec<String>,
}

impl TryFrom<RoleRepr> for Role {
    type Error = String;

    fn try_from(repr: RoleRepr) -> Result<Self, Self::Error> {
        if let Some(bad) = repr.permissions.iter().find(|p| !is_valid_grant(p)) {
            return Err(format!("invalid permission grant {bad:?}"));
        }
        Ok(Self {
            description: repr.description,
            permissions: repr.permissions,
        })
    }
}

impl Role {
    /// A role conferring these grants. Malformed grants never grant anything.
    pub fn new<I, S>(permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            description: None,
            permissions: permissions.into_iter().map(Into::into).collect(),
        }
    }

    /// Set the description.
    #[must_use]
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }
}

/// Role name → [`Role`]. Serialised as a plain map, so it fits under any key of a
/// configuration file:
///
/// ```
/// use pulse_core::rbac::RoleMap;
///
/// let roles: RoleMap = serde_json::from_str(r#"{
///     "admin":  {"permissions": ["*"]},
///     "viewer": {"permissions": ["etl.access"], "description": "read only"}
/// }"#).unwrap();
/// assert_eq!(roles.permissions_for(["viewer", "unknown"]), ["etl.access"]);
/// assert_eq!(roles.permissions_for(["admin", "viewer"]), ["*", "etl.access"]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoleMap {
    roles: BTreeMap<String, Role>,
}

impl RoleMap {
    /// An empty map.
    pub const fn new() -> Self {
        Self {
            roles: BTreeMap::new(),
        }
    }

    /// Add (or replace) a role.
    #[must_use]
    pub fn with_role(mut self, name: impl Into<String>, role: Role) -> Self {
        self.roles.insert(name.into(), role);
        self
    }

    /// The role of this name.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// The role names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(String::as_str)
    }

    /// The grants of these roles: each grant once, in the order the roles (then their
    /// grants) are given. Unknown roles confer nothing.
    pub fn permissions_for<I, S>(&self, roles: I) -> Vec<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out: Vec<String> = Vec::new();
        for role in roles {
            let Some(role) = self.roles.get(role.as_ref()) else {
                continue;
            };
            for grant in &role.permissions {
                if !out.contains(grant) {
                    out.push(grant.clone());
                }
            }
        }
        out
    }

    /// Add the grants of the identity's roles to its permissions (each once).
    pub fn expand(&self, identity: &mut Identity) {
        for grant in self.permissions_for(&identity.roles) {
            if !identity.permissions.contains(&grant) {
                identity.permissions.push(grant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
        [roles.admin]
        description = "every permission"
        permissions = ["*"]

        [roles.operator]
        permissions = ["etl.access", "etl.jobs.*"]

        [roles.viewer]
        permissions = ["etl.access"]
    "#;

    #[derive(Deserialize)]
    struct Config {
        roles: RoleMap,
    }

    #[test]
    fn loads_from_toml() {
        let config: Config = toml::from_str(TOML).unwrap();
        let roles = config.roles;
        assert_eq!(
            roles.names().collect::<Vec<_>>(),
            ["admin", "operator", "viewer"]
        );
        assert_eq!(
            roles.role("admin").unwrap().description.as_deref(),
            Some("every permission")
        );
        assert_eq!(
            roles.permissions_for(["viewer", "operator"]),
            ["etl.access", "etl.jobs.*"]
        );
    }

    #[test]
    fn json_and_toml_agree_and_round_trip() {
        let from_toml: Config = toml::from_str(TOML).unwrap();
        let json = serde_json::to_string(&from_toml.roles).unwrap();
        let from_json: RoleMap = serde_json::from_str(&json).unwrap();
        assert_eq!(from_json, from_toml.roles);
    }

    #[test]
    fn refuses_typos_and_malformed_grants() {
        let typo = r#"{"viewer": {"permisions": ["etl.access"]}}"#;
        assert!(serde_json::from_str::<RoleMap>(typo).is_err());
        let bad = r#"{"viewer": {"permissions": ["etl..access"]}}"#;
        let err = serde_json::from_str::<RoleMap>(bad).unwrap_err();
        assert!(
            err.to_string().contains("invalid permission grant"),
            "{err}"
        );
        let bad_toml = "[roles.x]\npermissions = [\"etl.ac*\"]\n";
        assert!(toml::from_str::<Config>(bad_toml).is_err());
    }

    #[test]
    fn expand_adds_role_grants_once() {
        let roles = RoleMap::new()
            .with_role("viewer", Role::new(["etl.access"]))
            .with_role("runner", Role::new(["etl.access", "etl.jobs.run"]));
        let mut id = Identity::new("u")
            .with_roles(["viewer", "runner", "ghost"])
            .with_permissions(["etl.access"]);
        roles.expand(&mut id);
        assert_eq!(id.permissions, ["etl.access", "etl.jobs.run"]);
        assert!(id.has_permission("etl.jobs.run"));
    }
}
