//! A decoder of `text/event-stream` bodies (the WHATWG server-sent events format).

use std::collections::VecDeque;

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event name (`message` when the server gave none).
    pub event: String,
    /// The data lines, joined with `\n`.
    pub data: String,
    /// The last event id seen on the stream, if any.
    pub id: Option<String>,
}

/// Turns body chunks into [`SseEvent`]s: lines may be split across chunks (even
/// inside a UTF-8 character or a `\r\n`), data may span several lines, comments and
/// unknown fields are ignored, one leading byte-order mark is dropped, and an event
/// whose `event:` is empty or absent is a `message`.
///
/// ```
/// use pulse_etl::client::SseDecoder;
///
/// let mut decoder = SseDecoder::new();
/// assert!(decoder.push(b": keep-alive\n\nevent: run\nid: 7\ndata: {\"a\"").is_empty());
/// let events = decoder.push(b":1}\ndata: [2]\n\n");
/// assert_eq!(events.len(), 1);
/// assert_eq!(events[0].event, "run");
/// assert_eq!(events[0].data, "{\"a\":1}\n[2]");
/// assert_eq!(events[0].id.as_deref(), Some("7"));
/// ```
#[derive(Debug, Default)]
pub struct SseDecoder {
    buffer: Vec<u8>,
    /// Past the stream's first bytes, where one byte-order mark is dropped.
    started: bool,
    /// The last chunk ended with a `\r`, already taken as a line end: a `\n` opening
    /// the next chunk is the rest of that `\r\n`, not a blank line.
    after_cr: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    last_id: Option<String>,
}

impl SseDecoder {
    /// A decoder at the start of a stream.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        if self.after_cr && !self.buffer.is_empty() {
            self.after_cr = false;
            start = usize::from(self.buffer[0] == b'\n');
        }
        if !self.started {
            const BOM: &[u8] = b"\xef\xbb\xbf";
            let head = &self.buffer[start..];
            if head.len() < BOM.len() && BOM.starts_with(head) {
                // Maybe the first bytes of a BOM: wait for the rest.
                return events;
            }
            self.started = true;
            if head.starts_with(BOM) {
                start += BOM.len();
            }
        }
        while let Some(offset) = self.buffer[start..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
        {
            let end = start + offset;
            let terminator = if self.buffer[end] == b'\r' {
                match self.buffer.get(end + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // The line ends here; a `\n` opening the next chunk is skipped
                    // then. Waiting for it instead would hold back an event that ends
                    // with this `\r` until the server sends more.
                    None => {
                        self.after_cr = true;
                        1
                    }
                }
            } else {
                1
            };
            let line = String::from_utf8_lossy(&self.buffer[start..end]).into_owned();
            start = end + terminator;
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
        }
        self.buffer.drain(..start);
        events
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        Some(SseEvent {
            event: event
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "message".to_owned()),
            data: std::mem::take(&mut self.data),
            id: self.last_id.clone(),
        })
    }
}

/// Events decoded but not yet handed out.
pub(crate) type Pending = VecDeque<SseEvent>;

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_chunks(input: &[u8], size: usize) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new();
        input
            .chunks(size)
            .flat_map(|chunk| decoder.push(chunk))
            .collect()
    }

    #[test]
    fn any_chunking_gives_the_same_events() {
        let input = "retry: 10\r\n: comment\r\nevent: run\r\nid: 1\r\ndata: {\"é\":1}\r\n\r\n\
                     data: plain\rdata:two\r\r\
                     event: ignored-without-data\n\n\
                     id: 3\ndata\n\n"
            .as_bytes();
        let expected = vec![
            SseEvent {
                event: "run".into(),
                data: "{\"é\":1}".into(),
                id: Some("1".into()),
            },
            SseEvent {
                event: "message".into(),
                data: "plain\ntwo".into(),
                id: Some("1".into()),
            },
            SseEvent {
                event: "message".into(),
                data: String::new(),
                id: Some("3".into()),
            },
        ];
        for size in 1..=input.len() {
            assert_eq!(decode_in_chunks(input, size), expected, "chunk size {size}");
        }
    }

    /// Found by the `sse` fuzz target (differential against the WHATWG rules): a
    /// leading byte-order mark hid the first line's field name, and `event:` with an
    /// empty value named the event `""` instead of `message`. Any chunking.
    #[test]
    fn a_leading_bom_is_dropped_and_an_empty_type_is_message() {
        let input = "\u{feff}data: first\n\nevent:\ndata: second\n\n\u{feff}data: third\n\n";
        let names = |events: &[SseEvent]| {
            events
                .iter()
                .map(|e| (e.event.clone(), e.data.clone()))
                .collect::<Vec<_>>()
        };
        let expected = vec![
            ("message".to_owned(), "first".to_owned()),
            ("message".to_owned(), "second".to_owned()),
        ];
        for size in 1..=input.len() {
            let events = decode_in_chunks(input.as_bytes(), size);
            // Only the stream's first BOM is dropped; a later one is part of a field name.
            assert_eq!(names(&events), expected, "chunk size {size}");
        }
    }

    /// Found by the `sse` fuzz target: an event whose blank line ended with a lone `\r`
    /// at the end of a chunk was held back until more bytes came (the `\r` might have
    /// been half of `\r\n`), so a quiet stream never delivered it.
    #[test]
    fn a_cr_at_the_end_of_a_chunk_ends_the_line_at_once() {
        let mut decoder = SseDecoder::new();
        assert_eq!(decoder.push(b"data: a\r\r").len(), 1);
        // The `\n` of a `\r\n` split across chunks is not a second (blank) line.
        assert!(decoder.push(b"data: b\r").is_empty());
        assert!(decoder.push(b"\ndata: c\r").is_empty());
        let events = decoder.push(b"\n\r\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "b\nc");
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        let mut decoder = SseDecoder::new();
        assert!(decoder.push(b"data: half").is_empty());
        assert!(decoder.push(b"\n").is_empty());
        assert_eq!(decoder.push(b"\n").len(), 1);
    }
}
