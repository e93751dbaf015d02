//! Who is calling: the verified [`Identity`] of a user, put into request extensions by
//! an authentication layer ([`JwtAuthLayer`](crate::jwt::JwtAuthLayer) or the internal
//! authentication layer) and read by handlers and by the RBAC layer.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::rbac;

/// The verified identity of the user on whose behalf a request is made.
///
/// Only authentication layers create it, from a verified credential; a handler that
/// asks for it when no such layer ran gets a 401 (the axum extractor fails closed).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Identity {
    /// The stable user id (the token's `sub`).
    pub subject: String,
    /// The user's e-mail address, when the credential carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Role names.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Permission grants, dotted names, possibly with whole-segment wildcards
    /// (`etl.*`, `*`).
    #[serde(default)]
    pub permissions: Vec<String>,
    /// When the credential this identity came from expires.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "unix_seconds"
    )]
    pub expires_at: Option<SystemTime>,
}

impl Identity {
    /// An identity with a subject and nothing else.
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            email: None,
            roles: Vec::new(),
            permissions: Vec::new(),
            expires_at: None,
        }
    }

    /// Set the e-mail address.
    #[must_use]
    pub fn with_email(mut self, email: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self
    }

    /// Set the roles.
    #[must_use]
    pub fn with_roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Set the permission grants.
    #[must_use]
    pub fn with_permissions<I, S>(mut self, permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.permissions = permissions.into_iter().map(Into::into).collect();
        self
    }

    /// Set the expiry.
    #[must_use]
    pub fn with_expires_at(mut self, expires_at: SystemTime) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// Whether any of this identity's grants covers `permission`
    /// (see [`rbac::grants`] for the wildcard rules).
    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions
            .iter()
            .any(|grant| rbac::grants(grant, permission))
    }
}

mod unix_seconds {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<SystemTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
            Some(d) => serializer.serialize_u64(d.as_secs()),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        let secs = Option::<u64>::deserialize(deserializer)?;
        Ok(secs.and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s))))
    }
}

#[cfg(feature = "axum")]
mod extract {
    use axum::extract::{FromRequestParts, OptionalFromRequestParts};
    use http::request::Parts;

    use super::Identity;
    use crate::error::ApiError;

    /// Fails closed: without an authentication layer in front, there is no identity
    /// and the handler is never reached (401).
    impl<S: Send + Sync> FromRequestParts<S> for Identity {
        type Rejection = ApiError;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Self, Self::Rejection> {
            parts
                .extensions
                .get::<Identity>()
                .cloned()
                .ok_or_else(|| ApiError::unauthorized().with_request_id_from(parts))
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for Identity {
        type Rejection = std::convert::Infallible;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            Ok(parts.extensions.get::<Identity>().cloned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_check_uses_wildcards() {
        let id = Identity::new("u1").with_permissions(["etl.*"]);
        assert!(id.has_permission("etl.jobs.run"));
        assert!(!id.has_permission("etl"));
        assert!(!id.has_permission("etlx.read"));
    }

    #[test]
    fn serde_round_trip() {
        let id = Identity::new("u1")
            .with_email("a@b.c")
            .with_roles(["admin"])
            .with_expires_at(std::time::UNIX_EPOCH + std::time::Duration::from_secs(10));
        let json = serde_json::to_string(&id).unwrap();
        assert!(json.contains("\"expires_at\":10"));
        let back: Identity = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
    }
}
