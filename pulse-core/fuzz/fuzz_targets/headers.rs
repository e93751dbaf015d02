//! Header hygiene (`pulse_core::headers`): whatever headers a client sends, the
//! stripped map has no hop-by-hop header, no header a `Connection` line named, no
//! reserved (`X-Internal-*`, `X-User-*`) and, unless trusted, no forwarding header, in
//! any spelling; and every other header survives with all its values, in order.
//!
//! Input: one header per line, `name: value` (lines that are not a valid header are
//! skipped), so the corpus stays readable.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use pulse_core::headers::{
    HOP_BY_HOP, HeaderHygiene, is_forwarded, is_reserved, strip_forwarded, strip_hop_by_hop,
    strip_reserved,
};

fuzz_target!(|data: &[u8]| {
    let original = parse(data);

    // The predicates agree with a model written from the policy text: `_` and `.`
    // are read as `-`, then the name is exactly the word or the word and a `-` suffix.
    for name in original.keys() {
        let spelled = model_spelling(name);
        assert_eq!(
            is_reserved(name),
            model_reserved(&spelled),
            "is_reserved({name})"
        );
        assert_eq!(
            is_forwarded(name),
            model_forwarded(&spelled),
            "is_forwarded({name})"
        );
    }

    let named = connection_tokens(&original);
    let hop_by_hop = |name: &HeaderName| HOP_BY_HOP.contains(name) || named.contains(name);

    let mut h = original.clone();
    strip_hop_by_hop(&mut h);
    assert_kept_exactly(&original, &h, |n| !hop_by_hop(n), "strip_hop_by_hop");

    let mut h = original.clone();
    strip_reserved(&mut h);
    assert_kept_exactly(&original, &h, |n| !is_reserved(n), "strip_reserved");

    let mut h = original.clone();
    strip_forwarded(&mut h);
    assert_kept_exactly(&original, &h, |n| !is_forwarded(n), "strip_forwarded");

    for strip_hop in [true, false] {
        for trusted in [true, false] {
            let policy = HeaderHygiene::new()
                .with_hop_by_hop(strip_hop)
                .with_trusted_forwarded(trusted);
            let mut h = original.clone();
            policy.apply(&mut h);
            let keep = |n: &HeaderName| {
                !(is_reserved(n) || (strip_hop && hop_by_hop(n)) || (!trusted && is_forwarded(n)))
            };
            assert_kept_exactly(&original, &h, keep, "HeaderHygiene::apply");
        }
    }
});

/// `after` holds exactly the names of `before` that `keep` accepts, each with all of
/// its values in their order.
fn assert_kept_exactly(
    before: &HeaderMap,
    after: &HeaderMap,
    keep: impl Fn(&HeaderName) -> bool,
    what: &str,
) {
    for name in before.keys() {
        let was: Vec<&HeaderValue> = before.get_all(name).iter().collect();
        let is: Vec<&HeaderValue> = after.get_all(name).iter().collect();
        if keep(name) {
            assert_eq!(was, is, "{what} changed {name}");
        } else {
            assert!(is.is_empty(), "{what} kept {name}: {is:?}");
        }
    }
    for name in after.keys() {
        assert!(before.contains_key(name), "{what} added {name}");
    }
}

/// Every token of every `Connection` line that is a header name, read independently of
/// the library: split on `,`, trim spaces and tabs.
fn connection_tokens(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|line| line.as_bytes().split(|b| *b == b','))
        .filter_map(|token| {
            let token = trim(token);
            HeaderName::from_bytes(token).ok()
        })
        .collect()
}

fn model_spelling(name: &HeaderName) -> String {
    name.as_str().replace(['_', '.'], "-")
}

fn model_reserved(spelled: &str) -> bool {
    ["x-internal", "x-user"]
        .iter()
        .any(|word| spelled == *word || spelled.starts_with(&format!("{word}-")))
}

fn model_forwarded(spelled: &str) -> bool {
    spelled == "forwarded"
        || spelled == "x-real-ip"
        || spelled == "x-forwarded"
        || spelled.starts_with("x-forwarded-")
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = bytes.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(s), Some(e)) => &bytes[s..=e],
        _ => &[],
    }
}

/// `name: value` per line; what `http` would not accept is skipped.
fn parse(data: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            map.append(name, value);
        }
    }
    map
}
