//! The SSE phase of a [`Session`]: one connection at a time, data events
//! held until a control event confirms them, reconnects from the last
//! control offset, and the fallback to long-poll in auto mode.

use std::borrow::Cow;
use std::pin::Pin;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use reqwest::StatusCode;

use super::{Answer, Phase, Session, Step, watched};
use crate::error::{DecodeKind, Error, ErrorKind, Result};
use crate::json::frame_elements;
use crate::offset::Offset;
use crate::read::LiveMode;
use crate::read::guard::{AUTO_SSE_MAX_SHORT, CLOCK_CHECK, ClockWatch, SSE_SHORT, SseEnd, sse_end};
use crate::read::sse::{SseError, SseParser};
use crate::request::{header_str, names};

pub(super) struct SseConnection {
    pub(super) body: crate::http::BufferedBody,
    pub(super) parser: SseParser,
    pub(super) base64: bool,
    /// Data events not yet confirmed by a control event.
    pub(super) pending: Vec<Bytes>,
    pub(super) pending_bytes: usize,
    /// When the connection opened (its age decides whether its end is healthy).
    pub(super) opened: Instant,
    /// A control event moved the offset or confirmed data.
    pub(super) moved: bool,
    /// The client ended it on purpose (max age, clock jump).
    pub(super) deliberate: bool,
    /// The next clock check or the maximum age, whichever is first: one
    /// timer for the connection's life, moved only when it fires (a new
    /// timer per wait cost a timer-wheel insert and removal per event).
    pub(super) wake: Pin<Box<tokio::time::Sleep>>,
}

impl Session {
    pub(super) async fn sse_step(&mut self) -> Result<Step> {
        if self.sse.is_none() {
            // Boxed: connecting is rare and its future large; inline it
            // would sit in every idle subscriber's future.
            match Box::pin(self.connect_sse()).await? {
                Some(conn) => self.sse = Some(conn),
                None => return Ok(Step::Continue),
            }
        }
        loop {
            let Some(conn) = self.sse.as_mut() else {
                return Ok(Step::Continue);
            };
            let step = match conn.parser.next_dispatch() {
                Some(Err(SseError::EventTooLarge { limit })) => {
                    return Err(Error::new(ErrorKind::ResponseTooLarge { limit })
                        .with_message("SSE event exceeds the size limit"));
                }
                Some(Ok(event)) => self.sse_event(&event)?,
                None => self.sse_wait().await?,
            };
            if let Some(step) = step {
                return Ok(step);
            }
        }
    }

    /// One parsed event (its data still in the parser): data is held until
    /// a control event confirms it (`None`: read on); a control event
    /// records the position and yields what is worth yielding.
    fn sse_event(&mut self, event: &str) -> Result<Option<Step>> {
        let limit = self.stream.client().max_response_bytes();
        let Some(conn) = self.sse.as_mut() else {
            return Ok(Some(Step::Continue));
        };
        match event {
            "data" => {
                let payload = if conn.base64 {
                    decode_base64(conn.parser.data())?
                } else {
                    conn.parser.take_data()
                };
                conn.pending_bytes += payload.len();
                if conn.pending_bytes > limit {
                    return Err(Error::new(ErrorKind::ResponseTooLarge { limit })
                        .with_message("SSE data before a control event exceeds the size limit"));
                }
                conn.pending.push(payload);
                Ok(None)
            }
            "control" => {
                // Read where the parser holds it: no copy.
                let Control {
                    next_offset,
                    cursor,
                    up_to_date,
                    closed,
                } = parse_control(conn.parser.data())?;
                // A cursor the read already has is not copied again.
                let cursor = cursor
                    .filter(|c| self.cursor.as_deref() != Some(&**c))
                    .map(Cow::into_owned);
                conn.pending_bytes = 0;
                let (data, messages, has_data) = join_payloads(self.json, &mut conn.pending)?;
                let (step, moved) = self.advance(Answer {
                    data,
                    messages,
                    typed_bytes: None,
                    has_data,
                    any_data: has_data,
                    next: next_offset,
                    cursor,
                    up_to_date,
                    closed,
                    status: StatusCode::OK,
                })?;
                if moved || has_data {
                    self.progressed();
                    if let Some(conn) = self.sse.as_mut() {
                        conn.moved = true;
                    }
                }
                if self.done {
                    self.sse = None;
                }
                Ok(Some(step))
            }
            // Unknown event types are ignored (forward compatibility).
            _ => Ok(None),
        }
    }

    /// No complete event buffered: wait for more bytes (`None`: parse on),
    /// the connection's end, its maximum age or a clock check.
    async fn sse_wait(&mut self) -> Result<Option<Step>> {
        let max_age = self.sse_max_age;
        let Some(conn) = self.sse.as_mut() else {
            return Ok(Some(Step::Continue));
        };
        let deadline = tokio::time::Instant::from_std(conn.opened + max_age);
        let mut wake = tokio::select! {
            read = conn.body.read_into(conn.parser.input()) => Wake::Body(read),
            () = conn.wake.as_mut() => Wake::Tick,
        };
        if matches!(wake, Wake::Tick) {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                wake = Wake::Expired;
            } else {
                conn.wake.as_mut().reset(deadline.min(now + CLOCK_CHECK));
            }
        }
        let ended = match wake {
            Wake::Body(Some(Ok(()))) => return Ok(None),
            Wake::Body(Some(Err(err))) => {
                let reason = if err.is_timeout() {
                    "idle timeout"
                } else {
                    "connection error"
                };
                tracing::debug!(error = %err, "SSE connection broke");
                reason
            }
            Wake::Body(None) => "server closed the connection",
            Wake::Expired => {
                conn.deliberate = true;
                "maximum connection age"
            }
            Wake::Tick => {
                if !self.clock.jumped() {
                    return Ok(None);
                }
                if let Some(conn) = self.sse.as_mut() {
                    conn.deliberate = true;
                }
                "the clock jumped (sleep or pause)"
            }
        };
        // Boxed: a connection ends rarely, and this future (a backoff
        // wait) would otherwise sit in every idle subscriber's future.
        Box::pin(self.sse_ended(ended)).await.map(Some)
    }

    /// The connection ended before the stream closed: drop unconfirmed data
    /// and reconnect from the last control offset. Connections that lasted
    /// (the server's periodic close) or moved the read reconnect at once;
    /// short ones that moved nothing back off and count towards the
    /// no-progress bound; auto mode long-polls after a few short ones.
    pub(super) async fn sse_ended(&mut self, reason: &'static str) -> Result<Step> {
        let Some(conn) = self.sse.take() else {
            return Ok(Step::Continue);
        };
        let age = conn.opened.elapsed();
        let verdict = if conn.deliberate {
            SseEnd::Healthy
        } else {
            sse_end(age, conn.moved)
        };
        if !conn.deliberate && age < SSE_SHORT {
            self.short_sse += 1;
        } else {
            self.short_sse = 0;
        }
        if self.mode == LiveMode::Auto && self.short_sse >= AUTO_SSE_MAX_SHORT {
            tracing::info!(path = %self.stream.url().path(), short = self.short_sse, "SSE connections keep ending quickly; falling back to long-poll");
            self.short_sse = 0;
            self.phase = Phase::LongPoll;
            if verdict == SseEnd::Stalled {
                self.stall("SSE connections").await?;
            }
            return Ok(Step::Continue);
        }
        match verdict {
            SseEnd::Healthy => self.progressed(),
            SseEnd::ShortWithProgress => {}
            SseEnd::Stalled => self.stall("SSE connections").await?,
        }
        tracing::debug!(path = %self.stream.url().path(), offset = %self.offset, reason, age_ms = age.as_millis() as u64, "reconnecting SSE");
        crate::telemetry::reconnect("sse");
        Ok(Step::Continue)
    }

    /// Open an SSE connection; `None` when there is none to read yet (auto
    /// mode fell back to long-poll, or the clock jumped while connecting).
    async fn connect_sse(&mut self) -> Result<Option<SseConnection>> {
        let spec = self.read_spec("sse").query("live", "sse").event_stream();
        // A timer for the connect only: an idle subscriber holds its
        // connection's own.
        let sent = watched(
            &mut self.clock,
            &mut None,
            self.stream.inner.send_retrying(&spec, &mut self.backoff),
        )
        .await;
        let Some(resp) = sent else {
            tracing::info!(path = %self.stream.url().path(), "the clock jumped (sleep or pause); connecting SSE again");
            return Ok(None);
        };
        let resp = resp?;
        let status = resp.status();
        let is_event_stream = header_str(resp.headers(), reqwest::header::CONTENT_TYPE)
            .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("text/event-stream"));
        if status == StatusCode::OK && is_event_stream {
            let base64 = header_str(resp.headers(), names::SSE_DATA_ENCODING)
                .is_some_and(|v| v.eq_ignore_ascii_case("base64"));
            let limit = self.stream.client().max_response_bytes();
            self.clock = ClockWatch::new();
            let opened = Instant::now();
            let first_wake =
                tokio::time::Instant::from_std(opened) + self.sse_max_age.min(CLOCK_CHECK);
            return Ok(Some(SseConnection {
                body: resp.into_buffered_body(),
                parser: SseParser::new(limit),
                base64,
                pending: Vec::new(),
                pending_bytes: 0,
                opened,
                moved: false,
                deliberate: false,
                wake: Box::pin(tokio::time::sleep_until(first_wake)),
            }));
        }
        let refused = matches!(status.as_u16(), 400 | 405 | 406 | 415 | 501)
            || (status.is_success() && !is_event_stream);
        if self.mode == LiveMode::Auto && refused {
            tracing::info!(path = %self.stream.url().path(), status = status.as_u16(), "SSE refused; falling back to long-poll");
            self.phase = Phase::LongPoll;
            return Ok(None);
        }
        let headers = resp.headers().clone();
        let body = crate::request::read_body_limited(resp, 4096)
            .await
            .unwrap_or_default();
        if status.is_success() {
            return Err(
                Error::decode(DecodeKind::Sse, "SSE response is not text/event-stream")
                    .with_status(status.as_u16()),
            );
        }
        Err(crate::request::error_from_response(
            &spec, status, &headers, &body,
        ))
    }
}

/// What woke an SSE read.
enum Wake {
    /// Bytes were added to the parser's input, or the body ended or failed.
    Body(Option<Result<(), crate::http::HttpError>>),
    Expired,
    Tick,
}

/// Join the data events confirmed by one control event, taking them out of
/// `parts` (which keeps its memory for the next ones): `(data, messages,
/// has_data)`. For JSON the messages are counted by splitting each event's
/// array, so a message that is `[]` or `{}` counts.
pub(super) fn join_payloads(
    json: bool,
    parts: &mut Vec<Bytes>,
) -> Result<(Bytes, Option<Vec<Bytes>>, bool)> {
    if !json {
        let data: Bytes = match parts.len() {
            0 => Bytes::new(),
            1 => parts.pop().unwrap_or_default(),
            _ => parts.concat().into(),
        };
        parts.clear();
        let has_data = !data.is_empty();
        return Ok((data, None, has_data));
    }
    let mut messages = Vec::new();
    for part in parts.iter() {
        messages.extend(crate::json::split_messages(part)?);
    }
    let data = if messages.is_empty() {
        None
    } else if parts.len() == 1 {
        parts.pop()
    } else {
        Some(frame_elements(&messages))
    };
    parts.clear();
    Ok(match data {
        Some(data) => (data, Some(messages), true),
        None => (Bytes::new(), None, false),
    })
}

pub(super) fn decode_base64(data: &[u8]) -> Result<Bytes> {
    let cleaned: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| *b != b'\n' && *b != b'\r')
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&cleaned)
        .map(Bytes::from)
        .map_err(|e| {
            Error::decode(
                DecodeKind::Base64,
                format!("SSE data event is not valid base64: {e}"),
            )
        })
}

#[derive(Debug)]
pub(super) struct Control<'a> {
    pub(super) next_offset: Offset,
    /// Borrowed from the event when it is a JSON string without escapes.
    pub(super) cursor: Option<Cow<'a, str>>,
    pub(super) up_to_date: bool,
    pub(super) closed: bool,
}

/// A control event's fields as found, before they are checked.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ControlFields<'a> {
    next_offset: Option<Cow<'a, str>>,
    cursor: Option<Cow<'a, str>>,
    up_to_date: bool,
    closed: bool,
}

pub(super) fn parse_control(data: &[u8]) -> Result<Control<'_>> {
    // One per delivery: the compact form servers send is read directly,
    // anything else by serde_json (which reads both alike).
    let fields = match flat_control(data) {
        Some(fields) => fields,
        None => serde_control(data)?,
    };
    let next = fields
        .next_offset
        .ok_or_else(|| Error::decode(DecodeKind::Sse, "control event without streamNextOffset"))?;
    let next_offset =
        Offset::from_server(&next).map_err(|e| Error::decode(DecodeKind::Sse, e.to_string()))?;
    Ok(Control {
        next_offset,
        cursor: fields.cursor,
        up_to_date: fields.up_to_date,
        closed: fields.closed,
    })
}

pub(super) fn serde_control(data: &[u8]) -> Result<ControlFields<'_>> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw<'a> {
        #[serde(borrow)]
        stream_next_offset: Option<Cow<'a, str>>,
        #[serde(borrow)]
        stream_cursor: Option<&'a serde_json::value::RawValue>,
        #[serde(default)]
        up_to_date: bool,
        #[serde(default)]
        stream_closed: bool,
    }
    let malformed = |e: serde_json::Error| {
        Error::decode(DecodeKind::Sse, format!("malformed control event: {e}"))
    };
    let raw: Raw<'_> = serde_json::from_slice(data).map_err(malformed)?;
    let cursor = match raw.stream_cursor.map(|v| v.get()) {
        None | Some("null") => None,
        Some(text) if text.starts_with('"') => Some(match serde_json::from_str::<&str>(text) {
            Ok(plain) => Cow::Borrowed(plain),
            // Escapes: decoded into a string of its own.
            Err(_) => Cow::Owned(serde_json::from_str::<String>(text).map_err(malformed)?),
        }),
        // Any other JSON value is echoed as its JSON text.
        Some(text) => Some(Cow::Owned(
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(malformed)?
                .to_string(),
        )),
    };
    Ok(ControlFields {
        next_offset: raw.stream_next_offset,
        cursor,
        up_to_date: raw.up_to_date,
        closed: raw.stream_closed,
    })
}

/// The control event in the form servers send it: one object without
/// whitespace whose values are strings without escapes, booleans or null.
/// `None` for anything else (escapes, numbers, nesting, whitespace, a
/// repeated field, a value of the wrong type): serde_json reads those, and
/// reports the errors. What this accepts, serde_json reads alike (a property
/// test and the `sse_control` fuzz target compare the two).
pub(super) fn flat_control(data: &[u8]) -> Option<ControlFields<'_>> {
    if has_control_byte(data) {
        return None;
    }
    let text = std::str::from_utf8(data).ok()?;
    let mut rest = text.strip_prefix('{')?.strip_suffix('}')?;
    let mut fields = ControlFields::default();
    if rest.is_empty() {
        return Some(fields);
    }
    let mut seen = [false; 4];
    loop {
        let (key, after) = flat_string(rest)?;
        let (value, after) = flat_value(after.strip_prefix(':')?)?;
        let slot = match key {
            "streamNextOffset" => {
                fields.next_offset = Some(Cow::Borrowed(value.string()?));
                0
            }
            "streamCursor" => {
                fields.cursor = match value {
                    FlatValue::Null => None,
                    other => Some(Cow::Borrowed(other.string()?)),
                };
                1
            }
            "upToDate" => {
                fields.up_to_date = value.boolean()?;
                2
            }
            "streamClosed" => {
                fields.closed = value.boolean()?;
                3
            }
            // Other fields are ignored, as serde_json ignores them.
            _ => usize::MAX,
        };
        if let Some(seen) = seen.get_mut(slot) {
            if *seen {
                return None;
            }
            *seen = true;
        }
        if after.is_empty() {
            return Some(fields);
        }
        rest = after.strip_prefix(',')?;
    }
}

#[derive(Debug, Clone, Copy)]
enum FlatValue<'a> {
    String(&'a str),
    Bool(bool),
    Null,
}

impl<'a> FlatValue<'a> {
    fn string(self) -> Option<&'a str> {
        match self {
            FlatValue::String(s) => Some(s),
            _ => None,
        }
    }

    fn boolean(self) -> Option<bool> {
        match self {
            FlatValue::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// A JSON string without escapes at the start of `input`, and what follows.
fn flat_string(input: &str) -> Option<(&str, &str)> {
    let body = input.strip_prefix('"')?;
    let end = memchr::memchr2(b'"', b'\\', body.as_bytes())?;
    if body.as_bytes()[end] != b'"' {
        return None;
    }
    // `end` is an ASCII quote: both sides are whole characters.
    Some((body.get(..end)?, body.get(end + 1..)?))
}

fn flat_value(input: &str) -> Option<(FlatValue<'_>, &str)> {
    if input.starts_with('"') {
        let (s, rest) = flat_string(input)?;
        return Some((FlatValue::String(s), rest));
    }
    for (word, value) in [
        ("true", FlatValue::Bool(true)),
        ("false", FlatValue::Bool(false)),
        ("null", FlatValue::Null),
    ] {
        if let Some(rest) = input.strip_prefix(word) {
            return Some((value, rest));
        }
    }
    None
}

/// Whether `data` holds a byte below 0x20 (JSON allows none in strings, and
/// the compact form has no whitespace).
fn has_control_byte(data: &[u8]) -> bool {
    crate::swar::any_byte_wide(data, |w| crate::swar::below(w, 0x20) != 0, |b| b < 0x20)
}

/// Fuzzing entry: [`parse_control`] on server bytes, as
/// `(next offset, cursor, up to date, closed)`.
pub(crate) fn fuzz_entry_control(data: &[u8]) -> Result<(Offset, Option<String>, bool, bool)> {
    // Panics (for the fuzzer to report) if the direct reading and
    // serde_json's disagree.
    if let Some(direct) = flat_control(data) {
        assert_eq!(
            Some(direct),
            serde_control(data).ok(),
            "the direct control reading differs from serde_json's"
        );
    }
    parse_control(data).map(|c| {
        let cursor = c.cursor.map(Cow::into_owned);
        (c.next_offset, cursor, c.up_to_date, c.closed)
    })
}
