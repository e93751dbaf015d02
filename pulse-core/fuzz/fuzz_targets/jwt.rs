//! JWT parsing and verification (`pulse_core::jwt::JwtVerifier`).
//!
//! Input without a newline: a raw token string (the `Authorization: Bearer` value is
//! parsed too). Input `HEADER\nCLAIMS[\nSIGNATURE]`: the two JSON texts are encoded and
//! signed with the verifier's own key (or given the raw third part as signature), so
//! the fuzzer reaches the header (`alg`, `typ`, `kid`) and claim checks behind the
//! signature.
//!
//! Properties: never a panic; a token is accepted only if its header names the key's
//! algorithm and its claims pass every documented check (read here with `serde_json`,
//! independently of the library); the verified-token cache gives the same answer as a
//! verifier without one, also when asked twice.
#![no_main]

use std::{
    fmt,
    sync::LazyLock,
    time::{Duration, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use libfuzzer_sys::fuzz_target;
use pulse_core::jwt::{JwtVerifier, VerificationKey, VerifiedTokenCache, bearer_token};
use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, Visitor},
};
use serde_json::{Value, value::RawValue};
use sha2::Sha256;

const SECRET: &[u8; 32] = b"pulse-fuzz-secret-of-thirty-two!";
const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "pulse-fuzz";
const AUDIENCE: &str = "fuzz-aud";
const LEEWAY: u64 = 30;
const MAX_LIFETIME: u64 = 3600;

fn verifier() -> JwtVerifier {
    let key = VerificationKey::hmac(SECRET).expect("a 32-byte secret");
    JwtVerifier::new(key)
        .with_issuer(ISSUER)
        .with_audience(AUDIENCE)
        .with_leeway(Duration::from_secs(LEEWAY))
        .with_max_lifetime(Duration::from_secs(MAX_LIFETIME))
        .with_clock(|| UNIX_EPOCH + Duration::from_secs(NOW))
}

static PLAIN: LazyLock<JwtVerifier> = LazyLock::new(verifier);
static CACHED: LazyLock<JwtVerifier> =
    LazyLock::new(|| verifier().with_cache(VerifiedTokenCache::new(1024)));

fuzz_target!(|data: &[u8]| {
    let token = match split3(data) {
        Some((header, claims, signature)) => sign(header, claims, signature),
        None => {
            let Ok(text) = std::str::from_utf8(data) else {
                return;
            };
            bearer_header(text);
            text.to_owned()
        }
    };

    let plain = PLAIN.verify(&token);
    assert_eq!(CACHED.verify(&token), plain, "cache changed the answer");
    assert_eq!(CACHED.verify(&token), plain, "cache hit changed the answer");

    if let Ok(identity) = plain {
        let (header, claims) = decode(&token).expect("an accepted token decodes");
        assert_eq!(header["alg"], "HS256", "accepted alg {:?}", header["alg"]);
        let int = |name: &str| claims.get(name).map(|v| v.as_u64().expect("integer claim"));
        let exp = int("exp").expect("accepted without exp");
        assert!(NOW < exp + LEEWAY, "accepted expired: exp {exp}");
        assert!(
            exp.saturating_sub(NOW) <= MAX_LIFETIME + LEEWAY,
            "lifetime: exp {exp}"
        );
        if let Some(iat) = int("iat") {
            assert!(iat <= NOW + LEEWAY, "issued in the future: {iat}");
            assert!(
                exp.saturating_sub(iat) <= MAX_LIFETIME,
                "lifetime: iat {iat} exp {exp}"
            );
        }
        if let Some(nbf) = int("nbf") {
            assert!(nbf <= NOW + LEEWAY, "not yet valid: {nbf}");
        }
        assert_eq!(claims["iss"], ISSUER);
        let aud_ok = match &claims["aud"] {
            Value::String(one) => one == AUDIENCE,
            Value::Array(many) => many.iter().any(|a| a == AUDIENCE),
            _ => false,
        };
        assert!(aud_ok, "accepted aud {:?}", claims["aud"]);
        assert_eq!(claims["sub"].as_str(), Some(identity.subject.as_str()));
        for (name, got) in [
            ("roles", &identity.roles),
            ("permissions", &identity.permissions),
        ] {
            let want: Vec<&str> = claims
                .get(name)
                .map(|v| {
                    v.as_array()
                        .expect("array claim")
                        .iter()
                        .map(|s| s.as_str().expect("string"))
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(
                got.iter().map(String::as_str).collect::<Vec<_>>(),
                want,
                "{name}"
            );
        }
    }
});

/// Header JSON, claims JSON and, when given, the raw signature.
type TokenParts<'a> = (&'a [u8], &'a [u8], Option<&'a [u8]>);

/// `HEADER\nCLAIMS[\nSIGNATURE]`.
fn split3(data: &[u8]) -> Option<TokenParts<'_>> {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let header = parts.next()?;
    let claims = parts.next()?;
    Some((header, claims, parts.next()))
}

fn sign(header: &[u8], claims: &[u8], signature: Option<&[u8]>) -> String {
    let mut token = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = match signature {
        Some(raw) => URL_SAFE_NO_PAD.encode(raw),
        None => {
            let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
            mac.update(token.as_bytes());
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        }
    };
    token.push('.');
    token.push_str(&signature);
    token
}

/// The header and claims of a token, as JSON objects of the members this target
/// reads. Read member by member: the verifier ignores members it does not know, and
/// one of those may hold valid JSON that `Value` cannot (a number such as `1e999` is out
/// of its range), so such a member is skipped here too. Invalid UTF-8 is replaced: serde
/// skips the value of an unknown claim without checking it (harmless: nothing reads it).
/// A member the checks read must be there at most once: the verifier rejects a repeat.
fn decode(token: &str) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let mut json = |read: &[&str]| -> Option<Value> {
        let bytes = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
        let Members(members) = serde_json::from_str(&String::from_utf8_lossy(&bytes)).ok()?;
        let mut object = serde_json::Map::new();
        for (name, raw) in members {
            if read.contains(&name.as_str()) {
                let value = serde_json::from_str(raw.get()).expect("a member the checks read");
                assert!(
                    object.insert(name.clone(), value).is_none(),
                    "repeated {name}"
                );
            } else if let Ok(value) = serde_json::from_str(raw.get()) {
                object.insert(name, value);
            }
        }
        Some(Value::Object(object))
    };
    Some((json(&["alg"])?, json(&CLAIMS_READ)?))
}

/// The claims the checks above read (of the header, they read `alg`).
const CLAIMS_READ: [&str; 8] = [
    "exp",
    "nbf",
    "iat",
    "iss",
    "aud",
    "sub",
    "roles",
    "permissions",
];

/// A JSON object's members in order, repeats kept, values unparsed.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// `bearer_token` on `Authorization: <text>`: what it returns is a non-empty token
/// without blanks, taken from the end of the value.
fn bearer_header(text: &str) {
    let Ok(value) = HeaderValue::from_str(text) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value);
    if let Ok(token) = bearer_token(&headers) {
        assert!(
            !token.is_empty() && !token.contains([' ', '\t']),
            "{token:?}"
        );
        assert!(
            text.trim_end_matches(' ').ends_with(token),
            "{text:?} -> {token:?}"
        );
        assert!(
            text.len() > 7 && text[..7].eq_ignore_ascii_case("bearer "),
            "{text:?}"
        );
    }
}
