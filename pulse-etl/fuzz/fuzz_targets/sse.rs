//! The server-sent-events decoder of the ETL client (`pulse_etl::client::SseDecoder`).
//!
//! Input: one byte that picks how the rest is cut into chunks, then the stream.
//!
//! Properties: whatever the bytes and however they are cut (inside a `\r\n`, inside a
//! UTF-8 character), the decoder yields exactly the events of a direct reading of the
//! WHATWG event-stream rules over the whole stream (below); no event name or id holds
//! a line break, an id never holds NUL, and data holds no `\r` (its lines are joined
//! with `\n`).
#![no_main]

use libfuzzer_sys::fuzz_target;

// The very file `pulse_etl::client` is built from. It depends on `std` only; if it
// ever needs more of the crate, this stops compiling and the target must depend on
// pulse-etl instead.
#[path = "../../src/client/sse.rs"]
#[allow(dead_code)]
mod sse;

use sse::{SseDecoder, SseEvent};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for chunk in chunks(stream, seed) {
        events.extend(decoder.push(chunk));
    }
    for event in &events {
        assert!(
            !event.event.contains(['\n', '\r']),
            "event name {:?}",
            event.event
        );
        assert!(!event.data.contains('\r'), "data {:?}", event.data);
        if let Some(id) = &event.id {
            assert!(!id.contains(['\n', '\r', '\0']), "id {id:?}");
        }
    }
    assert_eq!(
        events,
        model(stream),
        "stream {:?}",
        String::from_utf8_lossy(stream)
    );
});

/// Cuts `stream` into chunks of 1 to 8 bytes (a pseudo-random walk from `seed`), or
/// one chunk when `seed` is 0.
fn chunks(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![stream];
    }
    let mut state = u32::from(seed);
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let size = (1 + (state >> 16) % 8) as usize;
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        out.push(chunk);
        rest = tail;
    }
    out
}

/// The event-stream interpretation of the HTML standard (§9.2.6), over a complete
/// stream: decode as UTF-8 (invalid bytes replaced), drop one leading BOM, split into
/// lines at CRLF, CR or LF (an unterminated last line is discarded), then per line.
fn model(stream: &[u8]) -> Vec<SseEvent> {
    let text = String::from_utf8_lossy(stream);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                lines.push(std::mem::take(&mut line));
            }
            '\n' => lines.push(std::mem::take(&mut line)),
            c => line.push(c),
        }
    }

    let mut events = Vec::new();
    let (mut event_type, mut data, mut last_id) = (String::new(), String::new(), None);
    for line in lines {
        if line.is_empty() {
            // Dispatch: nothing without data; the type defaults to `message`.
            if !data.is_empty() {
                data.pop();
                events.push(SseEvent {
                    event: if event_type.is_empty() {
                        "message".to_owned()
                    } else {
                        event_type.clone()
                    },
                    data: std::mem::take(&mut data),
                    id: last_id.clone(),
                });
            }
            data.clear();
            event_type.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        match field {
            "event" => event_type = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => last_id = Some(value.to_owned()),
            _ => {}
        }
    }
    events
}
