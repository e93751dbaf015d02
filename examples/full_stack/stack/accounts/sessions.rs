//! Sessions: a login opens a refresh-token family; each refresh rotates the token
//! (the old one is marked rotated, a new one added); presenting a rotated token again
//! revokes the whole family (OAuth 2.0 Security BCP §4.14); a logout revokes the access
//! token's id and the family. Refresh tokens are 32 random bytes, given to the client
//! once and stored only as their SHA-256.
//!
//! Also what the gateways' revocation lists load: revoked token ids and sessions, and
//! the users' "valid after" stamps.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::{Any, Row, Transaction};

use super::audit::{self, AuditAction, AuditEvent};
use super::{AccountError, AccountStore, Origin, REVOCATION_MARGIN, bump_changes, duration_millis};

/// The length of a refresh token as the client holds it (32 bytes, base64url).
pub const REFRESH_TOKEN_CHARS: usize = 43;

/// Who a session's tokens are for, as of now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    /// The user's id (`sub`).
    pub id: String,
    /// The e-mail.
    pub email: String,
    /// Role names.
    pub roles: Vec<String>,
    /// Permission grants of those roles.
    pub permissions: Vec<String>,
    /// Tokens issued before this (ms since the epoch, a whole second) are revoked; new
    /// ones must not be issued before it.
    pub valid_after: Option<i64>,
}

/// An open session: the user and the refresh token to hand out.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user.
    pub user: SessionUser,
    /// The family id (the access tokens' `sid`).
    pub family: String,
    /// The new refresh token (given to the client, never stored).
    pub refresh_token: String,
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone)]
pub enum Rotation {
    /// A valid token, rotated: the session goes on with a new one.
    Rotated(Session),
    /// A token already rotated: the family is now revoked.
    Reused {
        /// The family revoked.
        family: String,
        /// Whose it was.
        user_id: String,
    },
    /// Unknown, expired or revoked, or its user is disabled or gone.
    Refused,
}

/// What [`AccountStore::load_revocations`] reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationRows {
    /// Revoked access-token ids and their expiry (ms).
    pub tokens: Vec<(String, i64)>,
    /// Revoked sessions (families) and until when their tokens may live (ms).
    pub sessions: Vec<(String, i64)>,
    /// Users' "valid after" stamps (ms, whole seconds).
    pub stamps: Vec<(String, i64)>,
}

/// What a logout revokes.
#[derive(Debug, Clone)]
pub struct Logout<'a> {
    /// The access token's id.
    pub jti: &'a str,
    /// Its expiry (ms).
    pub expires_at: i64,
    /// Its session, if it names one.
    pub session: Option<&'a str>,
    /// The refresh cookie, if the client sent one.
    pub refresh_token: Option<&'a str>,
}

/// The stored form of a refresh token.
fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The user `user_id` as a session sees it (roles, permissions, stamp); `None` when the
/// user is gone or disabled.
async fn session_user(
    tx: &mut Transaction<'static, Any>,
    user_id: &str,
) -> Result<Option<SessionUser>, sqlx::Error> {
    let Some(row) = sqlx::query("SELECT email, disabled FROM gateway_users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(None);
    };
    if row.try_get::<i64, _>("disabled")? != 0 {
        return Ok(None);
    }
    let mut roles = BTreeSet::new();
    let mut permissions = BTreeSet::new();
    for grant in sqlx::query(
        "SELECT ur.role, rp.permission FROM gateway_user_roles ur \
         LEFT JOIN gateway_role_permissions rp ON rp.role = ur.role WHERE ur.user_id = $1",
    )
    .bind(user_id)
    .fetch_all(&mut **tx)
    .await?
    {
        roles.insert(grant.try_get::<String, _>("role")?);
        if let Some(permission) = grant.try_get::<Option<String>, _>("permission")? {
            permissions.insert(permission);
        }
    }
    let valid_after =
        sqlx::query_scalar("SELECT valid_after FROM gateway_user_stamps WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(Some(SessionUser {
        id: user_id.to_owned(),
        email: row.try_get("email")?,
        roles: roles.into_iter().collect(),
        permissions: permissions.into_iter().collect(),
        valid_after,
    }))
}

/// Add a refresh token to `family`; the token.
async fn add_refresh_token(
    tx: &mut Transaction<'static, Any>,
    family: &str,
    user_id: &str,
    now: i64,
    expires_at: i64,
) -> Result<String, sqlx::Error> {
    let token = new_refresh_token();
    sqlx::query(
        "INSERT INTO gateway_refresh_tokens (token_hash, family_id, user_id, issued_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash(&token))
    .bind(family)
    .bind(user_id)
    .bind(now)
    .bind(expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(token)
}

/// Revoke every refresh token of `family` and remember the family as a revoked session
/// for as long as one of its access tokens may live.
async fn revoke_family(
    tx: &mut Transaction<'static, Any>,
    family: &str,
    now: i64,
    access_ttl_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE gateway_refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    revoke(
        tx,
        "session",
        family,
        now + access_ttl_ms + duration_millis(REVOCATION_MARGIN),
    )
    .await
}

async fn revoke(
    tx: &mut Transaction<'static, Any>,
    kind: &str,
    id: &str,
    until: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO gateway_revoked_tokens (kind, token_id, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (kind, token_id) DO UPDATE SET expires_at = CASE \
         WHEN excluded.expires_at > gateway_revoked_tokens.expires_at \
         THEN excluded.expires_at ELSE gateway_revoked_tokens.expires_at END",
    )
    .bind(kind)
    .bind(id)
    .bind(until)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl AccountStore {
    /// A successful login of `user_id`: a new family and refresh token, the last login
    /// time, the audit row. `None` if the user went away or was disabled meanwhile.
    pub async fn open_session(
        &self,
        user_id: &str,
        origin: &Origin,
    ) -> Result<Option<Session>, AccountError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let Some(user) = session_user(&mut tx, user_id).await? else {
            return Ok(None);
        };
        let family = uuid::Uuid::new_v4().to_string();
        let expires_at = now + duration_millis(self.policy.refresh_ttl);
        let refresh_token = add_refresh_token(&mut tx, &family, user_id, now, expires_at).await?;
        sqlx::query("UPDATE gateway_users SET last_login_at = $2 WHERE id = $1")
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let event = AuditEvent::new(
            AuditAction::LoginSucceeded,
            origin,
            Some(user_id),
            json!({"email": user.email, "session": family}),
        );
        audit::append(&mut tx, &event, now).await?;
        tx.commit().await?;
        Ok(Some(Session {
            user,
            family,
            refresh_token,
        }))
    }

    /// Present `token` (the refresh cookie): rotate it, or detect its reuse.
    pub async fn rotate_session(
        &self,
        token: &str,
        origin: &Origin,
    ) -> Result<Rotation, AccountError> {
        if token.len() != REFRESH_TOKEN_CHARS {
            return Ok(Rotation::Refused);
        }
        let now = self.now();
        let hash = token_hash(token);
        // Anyone may send a cookie: look it up before taking the write lock, so that
        // made-up tokens cost a read.
        let known: Option<String> = sqlx::query_scalar(
            "SELECT family_id FROM gateway_refresh_tokens WHERE token_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(self.db.pool())
        .await?;
        if known.is_none() {
            return Ok(Rotation::Refused);
        }
        let mut tx = self.db.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT family_id, user_id, expires_at, rotated_at, revoked_at \
             FROM gateway_refresh_tokens WHERE token_hash = $1{}",
            self.db.dialect().for_update()
        ))
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Rotation::Refused);
        };
        let family: String = row.try_get("family_id")?;
        let user_id: String = row.try_get("user_id")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        let rotated_at: Option<i64> = row.try_get("rotated_at")?;
        let revoked_at: Option<i64> = row.try_get("revoked_at")?;
        let access_ttl = duration_millis(self.policy.access_ttl);
        if revoked_at.is_some() || expires_at <= now {
            return Ok(Rotation::Refused);
        }
        if rotated_at.is_some() {
            // Someone holds a token they should have replaced: the thief or the user,
            // we cannot tell which, so the whole session ends for both.
            revoke_family(&mut tx, &family, now, access_ttl).await?;
            bump_changes(&mut tx).await?;
            let event = AuditEvent::new(
                AuditAction::RefreshReuse,
                origin,
                Some(&user_id),
                json!({"session": family}),
            );
            audit::append(&mut tx, &event, now).await?;
            tx.commit().await?;
            return Ok(Rotation::Reused { family, user_id });
        }
        let Some(user) = session_user(&mut tx, &user_id).await? else {
            revoke_family(&mut tx, &family, now, access_ttl).await?;
            bump_changes(&mut tx).await?;
            tx.commit().await?;
            return Ok(Rotation::Refused);
        };
        sqlx::query("UPDATE gateway_refresh_tokens SET rotated_at = $2 WHERE token_hash = $1")
            .bind(&hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let expires_at = now + duration_millis(self.policy.refresh_ttl);
        let refresh_token = add_refresh_token(&mut tx, &family, &user_id, now, expires_at).await?;
        let mut origin = origin.clone();
        origin.actor = Some(user_id.clone());
        let event = AuditEvent::new(
            AuditAction::Refresh,
            &origin,
            Some(&user_id),
            json!({"session": family}),
        );
        audit::append(&mut tx, &event, now).await?;
        tx.commit().await?;
        Ok(Rotation::Rotated(Session {
            user,
            family,
            refresh_token,
        }))
    }

    /// A logout by `origin.actor`: the access token's id is revoked until it expires,
    /// its session and the cookie's session end. Returns the sessions revoked.
    pub async fn end_session(
        &self,
        logout: &Logout<'_>,
        origin: &Origin,
    ) -> Result<Vec<String>, AccountError> {
        let now = self.now();
        let access_ttl = duration_millis(self.policy.access_ttl);
        let mut tx = self.db.begin().await?;
        revoke(
            &mut tx,
            "token",
            logout.jti,
            logout.expires_at + duration_millis(REVOCATION_MARGIN),
        )
        .await?;
        let mut families: Vec<String> = logout.session.map(str::to_owned).into_iter().collect();
        if let Some(token) = logout
            .refresh_token
            .filter(|t| t.len() == REFRESH_TOKEN_CHARS)
        {
            // Only a session of the same user: a cookie is not a credential here.
            let family: Option<String> = sqlx::query_scalar(
                "SELECT family_id FROM gateway_refresh_tokens WHERE token_hash = $1 AND user_id = $2",
            )
            .bind(token_hash(token))
            .bind(origin.actor.clone().unwrap_or_default())
            .fetch_optional(&mut *tx)
            .await?;
            families.extend(family.filter(|f| !families.contains(f)));
        }
        for family in &families {
            revoke_family(&mut tx, family, now, access_ttl).await?;
        }
        bump_changes(&mut tx).await?;
        let event = AuditEvent::new(
            AuditAction::Logout,
            origin,
            origin.actor.as_deref(),
            json!({"sessions": families}),
        );
        audit::append(&mut tx, &event, now).await?;
        tx.commit().await?;
        Ok(families)
    }

    /// Every revocation a verifier may still need at `now` (ms): revoked ids and
    /// sessions not yet expired, and stamps younger than the longest access token.
    pub async fn load_revocations(&self, now: i64) -> Result<RevocationRows, AccountError> {
        let pool = self.db.pool();
        let mut rows = RevocationRows::default();
        for row in sqlx::query(
            "SELECT kind, token_id, expires_at FROM gateway_revoked_tokens WHERE expires_at > $1",
        )
        .bind(now)
        .fetch_all(pool)
        .await?
        {
            let entry = (row.try_get("token_id")?, row.try_get("expires_at")?);
            match row.try_get::<String, _>("kind")?.as_str() {
                "session" => rows.sessions.push(entry),
                _ => rows.tokens.push(entry),
            }
        }
        let oldest =
            now - duration_millis(self.policy.access_ttl) - duration_millis(REVOCATION_MARGIN);
        for row in sqlx::query(
            "SELECT user_id, valid_after FROM gateway_user_stamps WHERE valid_after > $1",
        )
        .bind(oldest)
        .fetch_all(pool)
        .await?
        {
            rows.stamps
                .push((row.try_get("user_id")?, row.try_get("valid_after")?));
        }
        Ok(rows)
    }

    /// Delete what no longer matters at `now`: expired revocations and refresh tokens,
    /// stamps older than any live token. Returns the rows deleted.
    pub async fn prune_sessions(&self, now: i64) -> Result<u64, AccountError> {
        let oldest =
            now - duration_millis(self.policy.access_ttl) - duration_millis(REVOCATION_MARGIN);
        let mut tx = self.db.begin().await?;
        let mut deleted = 0;
        for (sql, bound) in [
            (
                "DELETE FROM gateway_revoked_tokens WHERE expires_at <= $1",
                now,
            ),
            (
                "DELETE FROM gateway_refresh_tokens WHERE expires_at <= $1",
                now,
            ),
            (
                "DELETE FROM gateway_user_stamps WHERE valid_after <= $1",
                oldest,
            ),
        ] {
            deleted += sqlx::query(sql)
                .bind(bound)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::super::test_support::{hashing, store};
    use super::super::users::UserKey;
    use super::*;

    async fn with_user() -> (AccountStore, Arc<AtomicI64>, String) {
        let clock = Arc::new(AtomicI64::new(1_000_000));
        let now = Arc::clone(&clock);
        let store = store().await.with_clock(move || now.load(Ordering::SeqCst));
        let hash = hashing().hash("correct horse").unwrap();
        let user = store
            .add_user(
                "ada@example.org",
                &hash,
                &["operator".to_owned()],
                &Origin::default(),
            )
            .await
            .unwrap();
        (store, clock, user.id)
    }

    #[tokio::test]
    async fn rotation_hands_out_a_new_token_and_reuse_revokes_the_family() {
        let (store, _clock, id) = with_user().await;
        let origin = Origin::default();
        let first = store.open_session(&id, &origin).await.unwrap().unwrap();
        assert_eq!(first.refresh_token.len(), REFRESH_TOKEN_CHARS);
        assert_eq!(first.user.permissions, ["etl.access", "etl.jobs.run"]);
        // Only the hash is stored.
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT token_hash FROM gateway_refresh_tokens")
                .fetch_all(store.db.pool())
                .await
                .unwrap();
        assert_eq!(stored, [token_hash(&first.refresh_token)]);

        let Rotation::Rotated(second) = store
            .rotate_session(&first.refresh_token, &origin)
            .await
            .unwrap()
        else {
            panic!("a fresh token rotates");
        };
        assert_eq!(second.family, first.family);
        assert_ne!(second.refresh_token, first.refresh_token);
        // The first token again: reuse, the family is revoked, the second token dies too.
        let reused = store
            .rotate_session(&first.refresh_token, &origin)
            .await
            .unwrap();
        assert!(matches!(reused, Rotation::Reused { ref family, .. } if *family == first.family));
        assert!(matches!(
            store
                .rotate_session(&second.refresh_token, &origin)
                .await
                .unwrap(),
            Rotation::Refused
        ));
        let rows = store.load_revocations(store.now()).await.unwrap();
        assert_eq!(rows.sessions.len(), 1);
        assert_eq!(rows.sessions[0].0, first.family);
        for bad in ["", "short", &"x".repeat(REFRESH_TOKEN_CHARS)] {
            assert!(matches!(
                store.rotate_session(bad, &origin).await.unwrap(),
                Rotation::Refused
            ));
        }
    }

    #[tokio::test]
    async fn expired_tokens_and_disabled_users_are_refused() {
        let (store, clock, id) = with_user().await;
        let origin = Origin::default();
        let session = store.open_session(&id, &origin).await.unwrap().unwrap();
        clock.fetch_add(
            duration_millis(store.policy().refresh_ttl),
            Ordering::SeqCst,
        );
        assert!(matches!(
            store
                .rotate_session(&session.refresh_token, &origin)
                .await
                .unwrap(),
            Rotation::Refused
        ));
        let session = store.open_session(&id, &origin).await.unwrap().unwrap();
        store
            .set_disabled(UserKey::Id(&id), true, &origin)
            .await
            .unwrap();
        assert!(matches!(
            store
                .rotate_session(&session.refresh_token, &origin)
                .await
                .unwrap(),
            Rotation::Refused
        ));
        assert!(store.open_session(&id, &origin).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_password_change_stamps_the_user_and_ends_the_sessions() {
        let (store, clock, id) = with_user().await;
        let origin = Origin::default();
        let session = store.open_session(&id, &origin).await.unwrap().unwrap();
        clock.store(1_234_567, Ordering::SeqCst);
        store
            .set_password(UserKey::Id(&id), "new hash", false, &origin)
            .await
            .unwrap();
        let rows = store.load_revocations(store.now()).await.unwrap();
        // The next whole second.
        assert_eq!(rows.stamps, [(id.clone(), 1_235_000)]);
        assert!(matches!(
            store
                .rotate_session(&session.refresh_token, &origin)
                .await
                .unwrap(),
            Rotation::Refused
        ));
        // Long after, nothing of it is needed any more.
        clock.fetch_add(
            duration_millis(store.policy().refresh_ttl) + 1,
            Ordering::SeqCst,
        );
        assert!(store.prune_sessions(store.now()).await.unwrap() >= 2);
        assert_eq!(
            store.load_revocations(store.now()).await.unwrap(),
            RevocationRows::default()
        );
    }

    #[tokio::test]
    async fn a_logout_revokes_the_token_and_the_sessions_of_its_user_only() {
        let (store, _clock, id) = with_user().await;
        let hash = hashing().hash("correct horse").unwrap();
        let other = store
            .add_user("bob@example.org", &hash, &[], &Origin::default())
            .await
            .unwrap();
        let mine = store
            .open_session(&id, &Origin::default())
            .await
            .unwrap()
            .unwrap();
        let theirs = store
            .open_session(&other.id, &Origin::default())
            .await
            .unwrap()
            .unwrap();
        let revoked = store
            .end_session(
                &Logout {
                    jti: "jti-1",
                    expires_at: store.now() + 900_000,
                    session: Some(&mine.family),
                    // Someone else's cookie is not ended by my logout.
                    refresh_token: Some(&theirs.refresh_token),
                },
                &Origin::actor(id.clone()),
            )
            .await
            .unwrap();
        assert_eq!(revoked, std::slice::from_ref(&mine.family));
        let rows = store.load_revocations(store.now()).await.unwrap();
        assert_eq!(rows.tokens.len(), 1);
        assert_eq!(rows.tokens[0].0, "jti-1");
        assert!(matches!(
            store
                .rotate_session(&theirs.refresh_token, &Origin::default())
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
    }
}
