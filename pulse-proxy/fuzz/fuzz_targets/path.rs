//! The request-path check (`pulse_proxy::check_path`): a path it accepts never
//! contains a dot segment, an empty segment, a backslash, a control character or an
//! encoded separator or `%`, as sent or after one or two rounds of decoding; and it
//! never panics, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulse_proxy::{ProxyError, check_path};
use pulse_proxy_fuzz::assert_safe_path;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    match check_path(path) {
        Ok(()) => assert_safe_path(path),
        Err(ProxyError::UnsafePath { .. }) => {}
        Err(other) => panic!("check_path({path:?}) failed with {other:?}"),
    }
});
