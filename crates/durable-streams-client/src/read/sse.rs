//! Incremental parser for `text/event-stream` bodies (PROTOCOL.md section 5.8).
//!
//! Implements the WHATWG "event stream interpretation" rules on raw bytes:
//!
//! * lines end in CRLF, LF or CR; a CRLF split across two pushes counts once;
//! * a UTF-8 byte order mark at the very start of the stream is skipped;
//! * lines starting with `:` are comments;
//! * `field:value` with one optional space after the colon removed; a line
//!   without a colon is a field with an empty value; field names are compared
//!   byte-wise;
//! * `data` appends `value` + `'\n'`, `event` sets the type, `id`, `retry` and
//!   unknown fields are ignored;
//! * an empty line dispatches the event when the data buffer is non-empty (the
//!   final `'\n'` is stripped), otherwise it only resets the event type.
//!
//! Data stays as bytes: the caller decides whether it is UTF-8 text or base64.
//! The event type is converted lossily to text, so no input ever fails; the
//! protocol's own types (`data`, `control`) and the default cost no copy.
//!
//! Cost is linear in the input however it is chunked: unparsed bytes live in
//! one `BytesMut` that is consumed from the front (`advance`, which reclaims
//! the space on a later `reserve`), the search for a line end resumes where the
//! previous one stopped, and data lines are appended once to the event buffer.
//!
//! Memory is bounded by `max_event_bytes`: when the current event's data plus
//! the line being read would exceed it, [`SseParser::next_event`] yields
//! [`SseError::EventTooLarge`] once and the parser drops everything up to the
//! next blank line, after which it parses normally again.

use std::borrow::Cow;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// One dispatched SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field; "message" when absent.
    pub(crate) event: Cow<'static, str>,
    /// The `data:` lines joined with '\n' (per the SSE spec; no trailing newline). Raw bytes: the caller decides UTF-8/base64.
    pub(crate) data: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SseError {
    /// An event (or a single line) grew beyond the configured limit before it was dispatched.
    EventTooLarge { limit: usize },
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseError::EventTooLarge { limit } => {
                write!(f, "server-sent event larger than the {limit}-byte limit")
            }
        }
    }
}

impl std::error::Error for SseError {}

const BOM: &[u8] = b"\xEF\xBB\xBF";
const DEFAULT_EVENT_TYPE: &str = "message";
/// Payloads up to this size are copied out of the data buffer, which keeps
/// its memory for the next event; larger ones take the buffer with them
/// (no copy), or it is let go when they were only read in place, so an
/// idle reader never holds a large one.
const COPIED_PAYLOAD: usize = 1024;
/// An input buffer that held more than this is let go once everything in
/// it is parsed (one that did not is at most about twice this size, and
/// kept for the next read).
const KEPT_INPUT: usize = 4096;

/// Incremental `text/event-stream` parser.
///
/// Feed network bytes with [`push`](Self::push), then call
/// [`next_event`](Self::next_event) until it returns `None`. Bytes are only
/// parsed (and the size limit only enforced) inside `next_event`, so callers
/// must drain after every push.
pub(crate) struct SseParser {
    /// Unparsed bytes. After `next_event` returns `None` it holds at most one
    /// partial line (or a partial BOM at the start of the stream).
    buf: BytesMut,
    /// `buf[..scanned]` is known to contain no CR or LF.
    scanned: usize,
    /// The previous line ended with CR: an LF that comes next belongs to it.
    skip_lf: bool,
    /// Nothing has been parsed yet, so a BOM may still be skipped.
    at_start: bool,
    /// Resynchronising after `EventTooLarge`: lines are dropped until a blank one.
    discarding: bool,
    /// While `discarding`: the current line is known not to be blank (its
    /// first bytes were already dropped).
    in_dropped_line: bool,
    /// The data buffer: each `data` value followed by '\n'.
    data: BytesMut,
    /// The event type buffer; empty means "message".
    event: Vec<u8>,
    /// `buf` held more than [`KEPT_INPUT`] bytes since it was last let go.
    large_input: bool,
    /// `data` holds the data of the event last given, until the next call.
    dispatched: bool,
    max_event_bytes: usize,
}

impl std::fmt::Debug for SseParser {
    // Lengths only: the buffers may hold megabytes of payload.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseParser")
            .field("buffered", &self.buf.len())
            .field("data_len", &self.data.len())
            .field("event", &String::from_utf8_lossy(&self.event))
            .field("discarding", &self.discarding)
            .field("max_event_bytes", &self.max_event_bytes)
            .finish_non_exhaustive()
    }
}

/// What one complete line did to the parser state.
enum LineOutcome {
    Nothing,
    /// An event of this type is ready; its data is in the data buffer.
    Dispatch(Cow<'static, str>),
    TooLarge,
}

impl SseParser {
    /// A parser that refuses events whose data plus the line being read exceed
    /// `max_event_bytes` bytes (a single line, field name included, counts too).
    pub(crate) fn new(max_event_bytes: usize) -> Self {
        SseParser {
            buf: BytesMut::new(),
            scanned: 0,
            skip_lf: false,
            at_start: true,
            discarding: false,
            in_dropped_line: false,
            data: BytesMut::new(),
            event: Vec::new(),
            large_input: false,
            dispatched: false,
            max_event_bytes,
        }
    }

    /// Feed the next bytes read from the network (any split, including inside CRLF and inside multi-byte UTF-8).
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The unparsed input, for the next network bytes to be added to its
    /// end directly (what [`push`](Self::push) does with a copy).
    pub(crate) fn input(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Next complete event, if one is ready. Call repeatedly until None after each push.
    pub(crate) fn next_event(&mut self) -> Option<Result<SseEvent, SseError>> {
        Some(self.next_dispatch()?.map(|event| SseEvent {
            event,
            data: self.take_data(),
        }))
    }

    /// Like [`next_event`](Self::next_event), but the event's data stays in
    /// the parser until the next call: read it with [`data`](Self::data),
    /// or take it with [`take_data`](Self::take_data).
    pub(crate) fn next_dispatch(&mut self) -> Option<Result<Cow<'static, str>, SseError>> {
        if self.dispatched {
            if self.data.len() > COPIED_PAYLOAD {
                // Read in place and not taken: let a large buffer go.
                self.data = BytesMut::new();
            } else {
                self.data.clear();
            }
            self.dispatched = false;
        }
        // (`capacity` counts only what is after the parsed bytes, so the
        // buffer's size is judged by what it held.)
        self.large_input |= self.buf.len() > KEPT_INPUT;
        loop {
            if self.at_start {
                let n = self.buf.len().min(BOM.len());
                if self.buf[..n] != BOM[..n] {
                    self.at_start = false;
                } else if n == BOM.len() {
                    self.buf.advance(BOM.len());
                    self.at_start = false;
                } else {
                    // Empty, or a proper prefix of the BOM: wait for more.
                    return None;
                }
            }
            if self.skip_lf {
                match self.buf.first() {
                    None => return None,
                    Some(&b) => {
                        self.skip_lf = false;
                        if b == b'\n' {
                            self.buf.advance(1);
                            // `scanned` is always 0 right after a line end.
                        }
                    }
                }
            }

            let found = memchr::memchr2(b'\n', b'\r', &self.buf[self.scanned..]);
            let Some(i) = found else {
                self.scanned = self.buf.len();
                return self.on_partial_line();
            };
            let end = self.scanned + i;
            self.skip_lf = self.buf[end] == b'\r';
            self.scanned = 0;

            let outcome = if self.discarding {
                let blank = end == 0 && !self.in_dropped_line;
                self.in_dropped_line = false;
                if blank {
                    self.discarding = false;
                }
                LineOutcome::Nothing
            } else if self.data.len().saturating_add(end) > self.max_event_bytes {
                LineOutcome::TooLarge
            } else {
                process_line(&self.buf[..end], &mut self.data, &mut self.event)
            };
            self.buf.advance(end + 1);

            match outcome {
                LineOutcome::Nothing => {}
                LineOutcome::Dispatch(event) => {
                    self.dispatched = true;
                    return Some(Ok(event));
                }
                LineOutcome::TooLarge => return Some(Err(self.start_discarding())),
            }
        }
    }

    /// The data of the event [`next_dispatch`](Self::next_dispatch) gave.
    pub(crate) fn data(&self) -> &[u8] {
        if self.dispatched { &self.data } else { &[] }
    }

    /// The data of the event [`next_dispatch`](Self::next_dispatch) gave,
    /// taken out of the parser.
    pub(crate) fn take_data(&mut self) -> Bytes {
        if !self.dispatched {
            return Bytes::new();
        }
        self.dispatched = false;
        if self.data.len() <= COPIED_PAYLOAD {
            let payload = Bytes::copy_from_slice(&self.data);
            self.data.clear();
            payload
        } else {
            self.data.split().freeze()
        }
    }

    /// True when the parser holds no partial line/event (useful to detect a truncated stream at EOF).
    pub(crate) fn is_idle(&self) -> bool {
        self.buf.is_empty()
            && (self.data.is_empty() || self.dispatched)
            && self.event.is_empty()
            && !self.discarding
    }

    /// `buf` holds only an unterminated line: enforce the limit and keep
    /// memory bounded while discarding.
    fn on_partial_line(&mut self) -> Option<Result<Cow<'static, str>, SseError>> {
        if self.buf.is_empty() {
            if self.large_input {
                // An idle reader does not keep what a large read needed.
                self.buf = BytesMut::new();
                self.large_input = false;
            }
            return None;
        }
        if self.discarding {
            // A line with bytes in it is not blank: drop them now.
            self.drop_partial_line();
            return None;
        }
        if self.data.len().saturating_add(self.buf.len()) > self.max_event_bytes {
            self.drop_partial_line();
            return Some(Err(self.start_discarding()));
        }
        None
    }

    fn drop_partial_line(&mut self) {
        self.buf.clear();
        self.scanned = 0;
        self.in_dropped_line = true;
    }

    /// Forget the current event and drop input until the next blank line.
    fn start_discarding(&mut self) -> SseError {
        self.discarding = true;
        self.data.clear();
        self.event.clear();
        SseError::EventTooLarge {
            limit: self.max_event_bytes,
        }
    }
}

/// Apply one complete line (without its terminator) to the event buffers.
fn process_line(line: &[u8], data: &mut BytesMut, event: &mut Vec<u8>) -> LineOutcome {
    if line.is_empty() {
        if data.is_empty() {
            event.clear();
            return LineOutcome::Nothing;
        }
        data.truncate(data.len() - 1);
        let event_type = match event.as_slice() {
            b"" => Cow::Borrowed(DEFAULT_EVENT_TYPE),
            b"data" => Cow::Borrowed("data"),
            b"control" => Cow::Borrowed("control"),
            other => Cow::Owned(String::from_utf8_lossy(other).into_owned()),
        };
        event.clear();
        return LineOutcome::Dispatch(event_type);
    }
    if line[0] == b':' {
        return LineOutcome::Nothing;
    }
    let (field, value) = match memchr::memchr(b':', line) {
        Some(colon) => {
            let value = &line[colon + 1..];
            (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &[][..]),
    };
    match field {
        b"data" => {
            data.reserve(value.len() + 1);
            data.extend_from_slice(value);
            data.put_u8(b'\n');
        }
        b"event" => {
            event.clear();
            event.extend_from_slice(value);
        }
        // `id` and `retry` are accepted and ignored, like unknown fields.
        _ => {}
    }
    LineOutcome::Nothing
}

/// Body of the library's hidden `__fuzz::sse_parse` entry point: feeds `data`
/// split at `split` (clamped), drains every event after each push, and
/// returns how many results (events and errors) came out.
///
/// Also checks the parser's own invariants and panics (for the fuzzer to
/// report) if they break: the split run must produce exactly what feeding
/// the whole input produces, and a 1-byte-at-a-time run must too.
pub(crate) fn fuzz_entry(data: &[u8], split: usize) -> usize {
    const LIMIT: usize = 1024;

    fn run<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<Result<SseEvent, SseError>>, bool) {
        let mut parser = SseParser::new(LIMIT);
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk);
            while let Some(item) = parser.next_event() {
                if let Ok(ev) = &item {
                    assert!(ev.data.len() <= LIMIT, "event over the limit");
                }
                out.push(item);
            }
            assert!(parser.buf.len() <= LIMIT, "partial line over the limit");
        }
        (out, parser.is_idle())
    }

    let (head, tail) = data.split_at(split.min(data.len()));
    let split_run = run([head, tail].into_iter());
    let whole_run = run(std::iter::once(data));
    assert_eq!(split_run, whole_run, "chunking changed the result");
    let bytewise_run = run(data.chunks(1));
    assert_eq!(bytewise_run, whole_run, "chunking changed the result");
    split_run.0.len()
}

#[cfg(test)]
#[path = "sse_tests.rs"]
mod tests;
