//! The keys the services sign and verify tokens with, by key id (`kid`), so that
//! secrets rotate without failed requests: tokens are signed with the newest key and
//! carry its id; verifiers hold the current key and the others still accepted.
//!
//! - User tokens: signed with `PULSE_JWT_SECRET`, verified with it and with every
//!   secret of `PULSE_JWT_VERIFY_SECRETS` (the previous secret after a rotation, or
//!   the next one before the gateways start signing with it). A secret's key id is a
//!   fingerprint of it, so no ids have to be managed.
//! - Internal tokens: signed with the first entry of `PULSE_INTERNAL_KEYS` (its id is
//!   the key id), verified with every entry; the static keys of the ring likewise.

use anyhow::Context;
use pulse_core::jwt::{KeySet, SigningKey, VerificationKey};
use sha2::{Digest, Sha256};

use super::config::Secrets;

/// The key id of a user-token secret: a fingerprint that tells keys apart and says
/// nothing about the secret.
pub fn user_key_id(secret: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"pulse user-token key id\0")
        .chain_update(secret.as_bytes())
        .finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("u-{hex}")
}

impl Secrets {
    /// The key signing user tokens: `PULSE_JWT_SECRET`, with its key id.
    pub fn user_token_signing_key(&self) -> anyhow::Result<SigningKey> {
        Ok(SigningKey::hmac(&self.jwt_secret)
            .context("PULSE_JWT_SECRET")?
            .with_kid(user_key_id(&self.jwt_secret)))
    }

    /// The keys user tokens are verified with: the signing secret and every secret of
    /// `PULSE_JWT_VERIFY_SECRETS`, by key id.
    pub fn user_token_keys(&self) -> anyhow::Result<KeySet> {
        let keys = KeySet::new();
        for secret in std::iter::once(&self.jwt_secret).chain(&self.jwt_verify_secrets) {
            keys.insert(
                VerificationKey::hmac(secret)
                    .context("PULSE_JWT_VERIFY_SECRETS")?
                    .with_kid(user_key_id(secret)),
            );
        }
        Ok(keys)
    }

    /// The `id:secret` entries of `PULSE_INTERNAL_KEYS`, the sent one first (the
    /// format `KeyRing::parse` reads).
    fn internal_entries(&self) -> anyhow::Result<Vec<(&str, &str)>> {
        self.internal_keys
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty() && !entry.starts_with('#'))
            .map(|entry| {
                entry
                    .split_once(':')
                    .map(|(id, secret)| (id.trim(), secret.trim()))
                    .context("PULSE_INTERNAL_KEYS must be `id:secret,…`")
            })
            .collect()
    }

    /// The key signing internal tokens: the first internal key, its id as key id.
    pub fn internal_token_signing_key(&self) -> anyhow::Result<SigningKey> {
        let entries = self.internal_entries()?;
        let (id, secret) = entries.first().context("PULSE_INTERNAL_KEYS is empty")?;
        Ok(SigningKey::hmac(secret)
            .context("internal token key")?
            .with_kid(*id))
    }

    /// The keys internal tokens are verified with: every internal key, by id.
    pub fn internal_token_keys(&self) -> anyhow::Result<KeySet> {
        let keys = KeySet::new();
        for (id, secret) in self.internal_entries()? {
            keys.insert(
                VerificationKey::hmac(secret)
                    .context("internal token key")?
                    .with_kid(id),
            );
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use pulse_core::Identity;
    use pulse_core::jwt::{JwtVerifier, TokenIssuer};

    use super::*;

    fn secrets(jwt: &str, verify: &[&str], internal: &str) -> Secrets {
        Secrets {
            jwt_secret: jwt.to_owned(),
            jwt_verify_secrets: verify.iter().map(|s| (*s).to_owned()).collect(),
            internal_keys: internal.to_owned(),
        }
    }

    const S1: &str = "first-secret-of-at-least-32-bytes!!";
    const S2: &str = "second-secret-of-at-least-32-bytes!";

    #[test]
    fn user_tokens_of_the_previous_and_the_next_secret_verify() {
        let before = secrets(S1, &[S2], "a:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        let after = secrets(S2, &[S1], "a:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        let done = secrets(S2, &[], "a:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        let issue = |s: &Secrets| {
            TokenIssuer::new(s.user_token_signing_key().unwrap())
                .issue(&Identity::new("u1"))
                .unwrap()
                .access_token
        };
        let verify = |s: &Secrets, token: &str| {
            JwtVerifier::new(s.user_token_keys().unwrap())
                .verify(token)
                .is_ok()
        };
        let (old, new) = (issue(&before), issue(&after));
        for s in [&before, &after] {
            assert!(verify(s, &old) && verify(s, &new));
        }
        assert!(verify(&done, &new));
        assert!(!verify(&done, &old), "the old key is gone");
        assert_ne!(user_key_id(S1), user_key_id(S2));
        assert!(!user_key_id(S1).contains(&S1[..8]));
    }

    #[test]
    fn internal_tokens_name_their_key() {
        let s = secrets(
            S1,
            &[],
            "new:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb,old:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        );
        assert_eq!(s.internal_token_signing_key().unwrap().kid(), Some("new"));
        let mut kids = s.internal_token_keys().unwrap().kids();
        kids.sort();
        assert_eq!(kids, ["new", "old"]);
    }
}
