//! What the pulse-proxy fuzz targets share: a model of the path rules, written from
//! the documentation rather than from the code, and a readable input format.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Decodes every well-formed `%XX` escape once; other bytes are copied.
pub fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                input.get(i + 1).and_then(|b| hex(*b)),
                input.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

const fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Asserts what a path the normaliser accepted must look like to any server behind
/// the proxy, as sent and after one or two rounds of percent-decoding: it starts with
/// `/`, has no empty segment but a trailing one, no `.` or `..` segment (also with
/// `;` parameters), no `\` and no NUL, and decoding adds no separator (`%2f`, `%5c`)
/// and no new escape (`%25`). As sent, it has no control character at all (an
/// encoded one other than NUL is data, like any other byte).
pub fn assert_safe_path(path: &str) {
    let raw = path.as_bytes();
    let once = percent_decode(raw);
    let twice = percent_decode(&once);
    assert_eq!(raw.first(), Some(&b'/'), "{path:?} does not start with /");
    assert!(
        !raw.iter().any(|b| *b < 0x20 || *b == 0x7f),
        "{path:?} has a control byte"
    );
    for (stage, bytes) in [
        ("raw", raw),
        ("decoded", &once[..]),
        ("decoded twice", &twice[..]),
    ] {
        assert!(
            !bytes.iter().any(|b| *b == b'\\' || *b == 0),
            "{path:?} {stage} has a backslash or NUL"
        );
        let segments: Vec<&[u8]> = bytes[1..].split(|b| *b == b'/').collect();
        for (i, segment) in segments.iter().enumerate() {
            let is_last = i + 1 == segments.len();
            assert!(
                !segment.is_empty() || is_last,
                "{path:?} {stage} has an empty segment"
            );
            let name = segment.split(|b| *b == b';').next().unwrap_or(segment);
            assert!(
                name != b"." && name != b"..",
                "{path:?} {stage} has a dot segment"
            );
        }
    }
    let slashes = |b: &[u8]| b.iter().filter(|c| **c == b'/').count();
    assert_eq!(slashes(raw), slashes(&once), "{path:?} has an encoded /");
    assert_eq!(
        once, twice,
        "{path:?} decodes differently twice (encoded %)"
    );
}

/// Trims spaces and tabs.
pub fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = bytes.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(s), Some(e)) => &bytes[s..=e],
        _ => &[],
    }
}

/// One `name: value` line; `None` for what `http` would not accept.
pub fn header_line(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|b| *b == b':')?;
    let name = HeaderName::from_bytes(trim(&line[..colon])).ok()?;
    let value = HeaderValue::from_bytes(trim(&line[colon + 1..])).ok()?;
    Some((name, value))
}

/// `name: value` lines into a map (invalid lines skipped).
pub fn header_map<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines.into_iter().filter_map(header_line) {
        map.append(name, value);
    }
    map
}
