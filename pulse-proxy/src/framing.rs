//! Step 1: reject requests whose framing two HTTP parsers could read differently
//! (the request-smuggling class).

use http::{HeaderMap, header};

use crate::error::ProxyError;

/// Check `Content-Length` and `Transfer-Encoding`; returns the declared length.
///
/// Rejected: both headers at once; a `Content-Length` that is not a decimal number;
/// several `Content-Length` values that differ (identical repeats are one value);
/// a `Transfer-Encoding` whose final coding is not `chunked`.
pub fn check_framing(headers: &HeaderMap) -> Result<Option<u64>, ProxyError> {
    let has_te = headers.contains_key(header::TRANSFER_ENCODING);
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        if has_te {
            return Err(bad("Content-Length with Transfer-Encoding"));
        }
        let text = value.to_str().map_err(|_| bad("invalid Content-Length"))?;
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("invalid Content-Length"));
            }
            let n: u64 = item.parse().map_err(|_| bad("invalid Content-Length"))?;
            match length {
                Some(prev) if prev != n => return Err(bad("differing Content-Length values")),
                _ => length = Some(n),
            }
        }
    }
    if has_te {
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty());
        if !last.is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
            return Err(bad("Transfer-Encoding must end with chunked"));
        }
    }
    Ok(length)
}

const fn bad(reason: &'static str) -> ProxyError {
    ProxyError::BadFraming { reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cl_and_te_together_are_rejected() {
        let h = headers(&[("content-length", "5"), ("transfer-encoding", "chunked")]);
        assert!(matches!(
            check_framing(&h),
            Err(ProxyError::BadFraming { .. })
        ));
    }

    #[test]
    fn differing_lengths_are_rejected_identical_ones_collapse() {
        let h = headers(&[("content-length", "5"), ("content-length", "6")]);
        assert!(check_framing(&h).is_err());
        let h = headers(&[("content-length", "5, 6")]);
        assert!(check_framing(&h).is_err());
        let h = headers(&[("content-length", "5"), ("content-length", "5")]);
        assert_eq!(check_framing(&h).unwrap(), Some(5));
    }

    #[test]
    fn junk_lengths_and_codings_are_rejected() {
        for v in ["-1", "+5", "0x10", "", "1 2", "99999999999999999999999"] {
            let mut h = HeaderMap::new();
            h.insert("content-length", HeaderValue::from_str(v).unwrap());
            assert!(check_framing(&h).is_err(), "{v:?}");
        }
        let h = headers(&[("transfer-encoding", "chunked, gzip")]);
        assert!(check_framing(&h).is_err());
        let h = headers(&[
            ("transfer-encoding", "gzip"),
            ("transfer-encoding", "chunked"),
        ]);
        assert_eq!(check_framing(&h).unwrap(), None);
    }
}
