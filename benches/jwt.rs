//! The cost of authentication per request: JWT verification for each key kind, the
//! verified-token cache, the key ring's constant-time check and internal-token minting.
//!
//! Run with: cargo bench --bench jwt -- --warm-up-time 1 --measurement-time 3
//!
//! Groups:
//! - `verify`: one `JwtVerifier::verify` of a valid token (HS256, RS256, ES256, EdDSA),
//!   and a cache hit;
//! - `refuse`: a forged HS256 token (bad signature) and an `alg: none` token;
//! - `internal`: `KeyRing::verify` with 1 and 8 keys, and minting an internal token.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pulse_core::{
    Identity,
    internal_auth::{InternalTokenMinter, KeyRing},
    jwt::{Algorithm, JwtVerifier, SigningKey, TokenIssuer, VerificationKey, VerifiedTokenCache},
};

const RSA_PRIVATE: &[u8] = include_bytes!("../pulse-core/tests/keys/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("../pulse-core/tests/keys/rsa_public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("../pulse-core/tests/keys/ec_private.pem");
const EC_PUBLIC: &[u8] = include_bytes!("../pulse-core/tests/keys/ec_public.pem");
const ED_PRIVATE: &[u8] = include_bytes!("../pulse-core/tests/keys/ed25519_private.pem");
const ED_PUBLIC: &[u8] = include_bytes!("../pulse-core/tests/keys/ed25519_public.pem");
const SECRET: &[u8] = b"bench-secret-of-at-least-32-bytes!";

fn user() -> Identity {
    Identity::new("user-1")
        .with_email("user-1@pulse.local")
        .with_roles(["admin"])
        .with_permissions(["etl.access", "etl.jobs.run"])
}

fn pair(signing: SigningKey, verifying: VerificationKey) -> (String, JwtVerifier) {
    let token = TokenIssuer::new(signing)
        .with_issuer("pulse")
        .with_audience("pulse-api")
        .issue(&user())
        .unwrap()
        .access_token;
    let verifier = JwtVerifier::new(verifying)
        .with_issuer("pulse")
        .with_audience("pulse-api");
    (token, verifier)
}

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    let cases = [
        (
            "HS256",
            SigningKey::hmac(SECRET).unwrap(),
            VerificationKey::hmac(SECRET).unwrap(),
        ),
        (
            "RS256",
            SigningKey::rsa_pem(RSA_PRIVATE, Algorithm::RS256).unwrap(),
            VerificationKey::rsa_pem(RSA_PUBLIC, Algorithm::RS256).unwrap(),
        ),
        (
            "ES256",
            SigningKey::ec_pem(EC_PRIVATE, Algorithm::ES256).unwrap(),
            VerificationKey::ec_pem(EC_PUBLIC, Algorithm::ES256).unwrap(),
        ),
        (
            "EdDSA",
            SigningKey::ed_pem(ED_PRIVATE).unwrap(),
            VerificationKey::ed_pem(ED_PUBLIC).unwrap(),
        ),
    ];
    for (name, signing, verifying) in cases {
        let (token, verifier) = pair(signing, verifying);
        group.bench_function(name, |b| {
            b.iter(|| verifier.verify(black_box(&token)).unwrap())
        });
    }
    let (token, verifier) = pair(
        SigningKey::rsa_pem(RSA_PRIVATE, Algorithm::RS256).unwrap(),
        VerificationKey::rsa_pem(RSA_PUBLIC, Algorithm::RS256).unwrap(),
    );
    let verifier = verifier.with_cache(VerifiedTokenCache::new(10_000));
    verifier.verify(&token).unwrap();
    group.bench_function("RS256 cache hit", |b| {
        b.iter(|| verifier.verify(black_box(&token)).unwrap())
    });
    group.finish();
}

fn refuse(c: &mut Criterion) {
    let mut group = c.benchmark_group("refuse");
    let (token, verifier) = pair(
        SigningKey::hmac(b"another-secret-another-secret-!!!").unwrap(),
        VerificationKey::hmac(SECRET).unwrap(),
    );
    group.bench_function("HS256 bad signature", |b| {
        b.iter(|| verifier.verify(black_box(&token)).unwrap_err())
    });
    let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1In0.";
    group.bench_function("alg none", |b| {
        b.iter(|| verifier.verify(black_box(none)).unwrap_err())
    });
    group.finish();
}

fn internal(c: &mut Criterion) {
    let mut group = c.benchmark_group("internal");
    for keys in [1usize, 8] {
        let spec: Vec<String> = (0..keys)
            .map(|i| format!("k{i}:{i}-internal-key-0123456789abcdef0123456789"))
            .collect();
        let ring = KeyRing::parse(&spec.join(",")).unwrap();
        let presented = format!("{}-internal-key-0123456789abcdef0123456789", keys - 1);
        group.bench_function(format!("key ring, {keys} keys"), |b| {
            b.iter(|| ring.verify(black_box(presented.as_bytes())).unwrap())
        });
    }
    let minter = InternalTokenMinter::new(SigningKey::hmac(SECRET).unwrap(), "pulse-gateway");
    let user = user();
    group.bench_function("mint HS256 internal token", |b| {
        b.iter(|| minter.mint(black_box(&user), "pulse-etl").unwrap())
    });
    group.finish();
}

criterion_group!(benches, verify, refuse, internal);
criterion_main!(benches);
