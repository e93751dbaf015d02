//! [`TokenRevocation`]: the hook a [`JwtVerifier`](super::JwtVerifier) consults after a
//! token has verified, so that a signed, unexpired token can still be refused — after a
//! logout, a password change, a disabled account.

use std::{fmt, sync::Arc};

use super::Claims;

/// Why a verified token is no longer accepted.
///
/// Answered like every other refusal of a bearer token (401 with
/// `WWW-Authenticate: Bearer error="invalid_token"`), with the code `token_revoked`, so
/// that a client can tell a revoked session from a malformed token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Revoked {
    /// This very token was revoked (its `jti`), e.g. by a logout.
    #[error("token revoked")]
    Token,
    /// The session the token belongs to (its `sid`) was revoked.
    #[error("session revoked")]
    Session,
    /// Every token of the subject issued before some moment was revoked (a password
    /// change, a disabled or removed account, new roles).
    #[error("token issued before the subject's tokens were revoked")]
    Subject,
}

/// Decides whether a token that verified (signature, type, time, issuer, audience) has
/// been revoked since it was issued.
///
/// The verifier calls [`check`](TokenRevocation::check) on every verification, cache
/// hits included, so it runs once per request: keep the state it reads in memory and
/// refresh it in the background — no I/O here. It sees the token's whole [`Claims`]:
/// `jti` (one token), `sid` (one session), `sub` and `iat` (all tokens of a subject
/// issued before a moment).
///
/// ```
/// use std::collections::HashSet;
/// use pulse_core::{Identity, jwt::{Claims, JwtVerifier, Revoked, SigningKey, TokenError, TokenIssuer, TokenRevocation, VerificationKey}};
///
/// /// Subjects whose every token is refused.
/// struct Banned(HashSet<String>);
///
/// impl TokenRevocation for Banned {
///     fn check(&self, claims: &Claims) -> Result<(), Revoked> {
///         match &claims.sub {
///             Some(sub) if self.0.contains(sub) => Err(Revoked::Subject),
///             _ => Ok(()),
///         }
///     }
/// }
///
/// let secret = [9u8; 32];
/// let issuer = TokenIssuer::new(SigningKey::hmac(secret)?);
/// let verifier = JwtVerifier::new(VerificationKey::hmac(secret)?)
///     .with_revocation(Banned(HashSet::from(["mallory".to_owned()])));
///
/// let alice = issuer.issue(&Identity::new("alice"))?.access_token;
/// let mallory = issuer.issue(&Identity::new("mallory"))?.access_token;
/// assert!(verifier.verify(&alice).is_ok());
/// assert_eq!(verifier.verify(&mallory), Err(TokenError::Revoked(Revoked::Subject)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait TokenRevocation: Send + Sync + 'static {
    /// `Err` when the token these claims belong to must no longer be accepted.
    fn check(&self, claims: &Claims) -> Result<(), Revoked>;
}

impl<T: TokenRevocation + ?Sized> TokenRevocation for Arc<T> {
    fn check(&self, claims: &Claims) -> Result<(), Revoked> {
        (**self).check(claims)
    }
}

/// The revocation hook as the verifier keeps it.
#[derive(Clone)]
pub(crate) struct RevocationHook(pub(crate) Arc<dyn TokenRevocation>);

impl fmt::Debug for RevocationHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RevocationHook { .. }")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::{Duration, SystemTime};

    use http::{Request, Response, StatusCode, header};
    use http_body_util::BodyExt;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    use super::*;
    use crate::Identity;
    use crate::jwt::{
        IssueOptions, JwtAuthLayer, JwtVerifier, SigningKey, TokenError, TokenIssuer,
        VerificationKey, VerifiedTokenCache,
    };

    const SECRET: [u8; 32] = [5u8; 32];

    /// Revoked ids, sessions and per-subject "valid after" stamps, changeable at run time.
    #[derive(Default)]
    struct List {
        jtis: Mutex<Vec<String>>,
        sessions: Mutex<Vec<String>>,
        valid_after: Mutex<Vec<(String, u64)>>,
    }

    impl TokenRevocation for List {
        fn check(&self, claims: &Claims) -> Result<(), Revoked> {
            if let Some(jti) = &claims.jti
                && self.jtis.lock().unwrap().contains(jti)
            {
                return Err(Revoked::Token);
            }
            if let Some(sid) = &claims.sid
                && self.sessions.lock().unwrap().contains(sid)
            {
                return Err(Revoked::Session);
            }
            let stamps = self.valid_after.lock().unwrap();
            let iat = claims.iat.unwrap_or(0);
            if stamps
                .iter()
                .any(|(sub, after)| claims.sub.as_ref() == Some(sub) && iat < *after)
            {
                return Err(Revoked::Subject);
            }
            Ok(())
        }
    }

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(SigningKey::hmac(SECRET).unwrap())
    }

    fn verifier(list: &Arc<List>) -> JwtVerifier {
        JwtVerifier::new(VerificationKey::hmac(SECRET).unwrap()).with_revocation(Arc::clone(list))
    }

    #[test]
    fn a_revoked_jti_session_or_subject_is_refused_and_others_are_not() {
        let list = Arc::new(List::default());
        let verifier = verifier(&list);
        let one = issuer()
            .issue_with(
                &Identity::new("u1"),
                &IssueOptions::new().with_session_id("s1"),
            )
            .unwrap();
        let two = issuer()
            .issue_with(
                &Identity::new("u1"),
                &IssueOptions::new().with_session_id("s2"),
            )
            .unwrap();
        assert!(verifier.verify(&one.access_token).is_ok());
        assert_eq!(
            verifier.verify_claims(&one.access_token).unwrap().sid,
            Some("s1".to_owned())
        );

        list.jtis.lock().unwrap().push(one.jti.clone());
        assert_eq!(
            verifier.verify(&one.access_token),
            Err(TokenError::Revoked(Revoked::Token))
        );
        assert!(verifier.verify(&two.access_token).is_ok());

        list.sessions.lock().unwrap().push("s2".to_owned());
        assert_eq!(
            verifier.verify_claims(&two.access_token).unwrap_err(),
            TokenError::Revoked(Revoked::Session)
        );
    }

    #[test]
    fn cached_tokens_are_checked_again_on_every_verification() {
        let list = Arc::new(List::default());
        let cache = VerifiedTokenCache::new(100);
        let verifier = verifier(&list).with_cache(cache.clone());
        let token = issuer().issue(&Identity::new("u1")).unwrap().access_token;
        assert!(verifier.verify(&token).is_ok());
        cache.run_pending_tasks();
        assert_eq!(cache.entry_count(), 1);
        // Revoked after it was cached: the cache hit is refused too.
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        list.valid_after
            .lock()
            .unwrap()
            .push(("u1".to_owned(), now + 1));
        assert_eq!(
            verifier.verify(&token),
            Err(TokenError::Revoked(Revoked::Subject))
        );
    }

    #[test]
    fn tokens_issued_no_earlier_than_a_stamp_survive_it() {
        // Stamps are whole seconds, rounded up: a token issued in the stamp's own second,
        // after the change, gets that second as `iat` and is accepted.
        let list = Arc::new(List::default());
        let verifier = verifier(&list);
        let now = SystemTime::now();
        let stamp = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 1;
        list.valid_after
            .lock()
            .unwrap()
            .push(("u1".to_owned(), stamp));
        let old = issuer().issue(&Identity::new("u1")).unwrap();
        assert!(verifier.verify(&old.access_token).is_err());
        let new = issuer()
            .issue_with(
                &Identity::new("u1"),
                &IssueOptions::new()
                    .issued_no_earlier_than(SystemTime::UNIX_EPOCH + Duration::from_secs(stamp)),
            )
            .unwrap();
        let claims = verifier.verify_claims(&new.access_token).unwrap();
        assert_eq!(claims.iat, Some(stamp));
        // The lifetime is kept: `exp - iat` is the issuer's lifetime.
        assert_eq!(
            claims.exp,
            Some(stamp + issuer().lifetime().as_secs()),
            "{claims:?}"
        );
    }

    #[tokio::test]
    async fn the_layer_answers_token_revoked_with_www_authenticate() {
        let list = Arc::new(List::default());
        let token = issuer().issue(&Identity::new("u1")).unwrap();
        list.jtis.lock().unwrap().push(token.jti.clone());
        let service = ServiceBuilder::new()
            .layer(JwtAuthLayer::new(verifier(&list)))
            .service(service_fn(|_req: Request<String>| async {
                Ok::<_, std::convert::Infallible>(Response::new(String::from("inner")))
            }));
        let request = Request::builder()
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", token.access_token),
            )
            .header("x-request-id", "rid-1")
            .body(String::new())
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "token_revoked");
        assert_eq!(body["request_id"], "rid-1");
    }
}
