//! The claims Pulse reads from and writes into tokens, with strict JSON types.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{MapAccess, Visitor, value::MapAccessDeserializer},
};

use crate::identity::Identity;

/// The claims of a Pulse token.
///
/// Deserialisation is strict: a claim of the wrong JSON type (`"exp": "soon"`,
/// `"sub": 5`, `"permissions": "x"`) or a repeated claim fails the whole token. `sub` and
/// `exp` are options here only so that their absence is reported as a missing claim
/// rather than as malformed JSON; the verifier requires both. Only a JSON object is
/// accepted (serde would otherwise read an array positionally into the fields).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
// `remote = "Self"` makes the derives inherent functions, wrapped by the trait impls
// below, so that deserialisation can insist on an object.
#[serde(remote = "Self")]
#[non_exhaustive]
pub struct Claims {
    /// Subject: the stable user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience: one string or an array of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Unique token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Session id (OpenID Connect's `sid`): the login session the token was issued
    /// in, so that ending the session can revoke every token of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The user's e-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Role names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Permission grants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<String>,
}

impl Serialize for Claims {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Self::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly;

        impl<'de> Visitor<'de> for ObjectOnly {
            type Value = Claims;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of claims")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Claims, A::Error> {
                Claims::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer.deserialize_map(ObjectOnly)
    }
}

impl Claims {
    /// The claims describing `identity` (subject, e-mail, roles, permissions); the
    /// registered time, issuer and audience claims are left for the issuer to set.
    pub fn for_identity(identity: &Identity) -> Self {
        Self {
            sub: Some(identity.subject.clone()),
            email: identity.email.clone(),
            roles: identity.roles.clone(),
            permissions: identity.permissions.clone(),
            ..Self::default()
        }
    }

    /// The [`Identity`] these claims describe; `None` without `sub`.
    pub fn to_identity(&self) -> Option<Identity> {
        let mut identity = Identity::new(self.sub.clone()?)
            .with_roles(self.roles.iter().cloned())
            .with_permissions(self.permissions.iter().cloned());
        identity.email.clone_from(&self.email);
        identity.expires_at = self
            .exp
            .and_then(|exp| UNIX_EPOCH.checked_add(Duration::from_secs(exp)));
        Some(identity)
    }
}

/// The `aud` claim: one audience or several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `audience` is among these.
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(one) => one == audience,
            Self::Many(many) => many.iter().any(|a| a == audience),
        }
    }
}

/// Seconds since the Unix epoch; 0 for times before it.
pub(crate) fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_json_types_are_refused() {
        for bad in [
            r#"{"sub":"u","exp":"soon"}"#,
            r#"{"sub":5,"exp":1}"#,
            r#"{"sub":"u","exp":1,"permissions":"x"}"#,
            r#"{"sub":"u","exp":1,"roles":[1]}"#,
            r#"{"sub":"u","exp":1.5}"#,
            r#"{"sub":"u","exp":-1}"#,
            r#"{"sub":"u","exp":1,"aud":7}"#,
            r#"{"sub":"u","exp":1,"exp":2}"#,
            r#"["sub"]"#,
            r#"["u", 1900000000]"#,
        ] {
            assert!(serde_json::from_str::<Claims>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identity_round_trip() {
        let id = Identity::new("u1")
            .with_email("a@b.c")
            .with_roles(["admin"])
            .with_permissions(["etl.*"]);
        let mut claims = Claims::for_identity(&id);
        claims.exp = Some(10);
        let back = claims.to_identity().unwrap();
        assert_eq!(back.subject, "u1");
        assert_eq!(back.permissions, ["etl.*"]);
        assert_eq!(back.expires_at, Some(UNIX_EPOCH + Duration::from_secs(10)));
    }
}
