//! The bearer token of a request's `Authorization` header.

use http::{HeaderMap, header::AUTHORIZATION};

use super::TokenError;

/// The token of the request's single `Authorization: Bearer <token>` header (scheme
/// case-insensitive).
///
/// No header, or another scheme, is [`TokenError::Missing`]; two headers are
/// [`TokenError::DuplicateHeader`]; anything else unusable is
/// [`TokenError::MalformedHeader`].
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, TokenError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Err(TokenError::Missing),
        (Some(value), None) => value,
        (Some(_), Some(_)) => return Err(TokenError::DuplicateHeader),
    };
    let bytes = value.as_bytes();
    // `HeaderValue::to_str`'s rule (visible ASCII, space, tab), as one pass without an
    // early exit, which the compiler vectorises: a token is a few hundred bytes.
    if !bytes.iter().fold(true, |ok, &b| {
        ok & ((b' '..=b'~').contains(&b) | (b == b'\t'))
    }) {
        return Err(TokenError::MalformedHeader);
    }
    let (scheme, token) = match bytes.iter().position(|&b| b == b' ') {
        Some(space) => (&bytes[..space], &bytes[space + 1..]),
        None => (bytes, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(TokenError::Missing);
    }
    let token = trim_spaces(token);
    // `contains` on bytes is core's word-at-a-time memchr.
    if token.is_empty() || token.contains(&b' ') || token.contains(&b'\t') {
        return Err(TokenError::MalformedHeader);
    }
    // Visible ASCII only, so UTF-8.
    std::str::from_utf8(token).map_err(|_| TokenError::MalformedHeader)
}

/// `token` without leading and trailing spaces (tabs are kept, and refused).
fn trim_spaces(mut token: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = token {
        token = rest;
    }
    while let [rest @ .., b' '] = token {
        token = rest;
    }
    token
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for h in [&b"Bearer a.b.c"[..], b"bearer a.b.c", b"BEARER   a.b.c "] {
            assert_eq!(bearer_token(&headers(&[h])), Ok("a.b.c"));
        }
    }

    /// The straightforward reading `bearer_token` must agree with.
    fn bearer_reference(headers: &HeaderMap) -> Result<&str, TokenError> {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let value = match (values.next(), values.next()) {
            (None, _) => return Err(TokenError::Missing),
            (Some(value), None) => value,
            (Some(_), Some(_)) => return Err(TokenError::DuplicateHeader),
        };
        let value = value.to_str().map_err(|_| TokenError::MalformedHeader)?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::Missing);
        }
        let token = token.trim_matches(' ');
        if token.is_empty() || token.contains([' ', '\t']) {
            return Err(TokenError::MalformedHeader);
        }
        Ok(token)
    }

    #[test]
    fn bearer_token_agrees_with_the_plain_reading() {
        let pieces: [&[u8]; 12] = [
            b"Bearer",
            b"bearer",
            b"Basic",
            b" ",
            b"  ",
            b"\t",
            b"a.b.c",
            b"x",
            b"\x7f",
            b"\xc3\xa9",
            b"~",
            b"\x01",
        ];
        let mut checked = 0;
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    for d in [&b""[..], b" ", b"\t", b"y"] {
                        let value = [a, b, c, d].concat();
                        let Ok(header) = HeaderValue::from_bytes(&value) else {
                            continue;
                        };
                        let mut map = HeaderMap::new();
                        map.insert(AUTHORIZATION, header);
                        assert_eq!(
                            bearer_token(&map),
                            bearer_reference(&map),
                            "{:?}",
                            String::from_utf8_lossy(&value)
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 3_000, "{checked}");
    }

    #[test]
    fn bearer_header_failures() {
        assert_eq!(bearer_token(&headers(&[])), Err(TokenError::Missing));
        assert_eq!(
            bearer_token(&headers(&[b"Basic dXNlcjpwYXNz"])),
            Err(TokenError::Missing)
        );
        assert_eq!(
            bearer_token(&headers(&[b"Bearer a.b.c", b"Bearer a.b.c"])),
            Err(TokenError::DuplicateHeader)
        );
        assert_eq!(
            bearer_token(&headers(&[b"Bearer"])),
            Err(TokenError::MalformedHeader)
        );
        assert_eq!(
            bearer_token(&headers(&[b"Bearer a b"])),
            Err(TokenError::MalformedHeader)
        );
        assert_eq!(
            bearer_token(&headers(&[b"Bearer \xff"])),
            Err(TokenError::MalformedHeader)
        );
    }
}
