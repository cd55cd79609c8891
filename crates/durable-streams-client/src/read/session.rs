//! One state machine over catch-up, long-poll and SSE that yields [`Chunk`]s
//! and always resumes from the last delivered offset.

use base64::Engine;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream as FuturesStream, StreamExt};
use reqwest::{Method, StatusCode};

use super::sse::{SseError, SseParser};
use super::{Chunk, LiveMode};
use crate::error::{DecodeKind, Error, ErrorKind, Result};
use crate::offset::Offset;
use crate::request::{RequestSpec, header_str, names};
use crate::stream::Stream;

/// SSE connections in a row that may end without a single control event
/// before auto mode gives up on SSE and long-polls instead.
const AUTO_SSE_MAX_FAILURES: u32 = 3;

/// Empty, not-up-to-date responses in a row tolerated before treating the
/// reader as caught up (guards against a hot loop on a misbehaving server).
const MAX_NO_PROGRESS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    CatchUp,
    LongPoll,
    Sse,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::CatchUp => "catch-up",
            Phase::LongPoll => "long-poll",
            Phase::Sse => "sse",
        }
    }
}

struct SseConnection {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: SseParser,
    base64: bool,
    /// Data events not yet confirmed by a control event.
    pending: Vec<Bytes>,
    pending_bytes: usize,
    saw_control: bool,
}

/// What one step of the machine produced.
enum Step {
    Yield(Chunk),
    Continue,
}

pub(crate) struct Session {
    stream: Stream,
    mode: LiveMode,
    phase: Phase,
    offset: Offset,
    cursor: Option<String>,
    json: bool,
    done: bool,
    last_up_to_date: bool,
    no_progress: u32,
    sse: Option<SseConnection>,
    sse_failures: u32,
    reconnects: u32,
}

impl Session {
    pub(crate) fn new(stream: Stream, offset: Offset, mode: LiveMode, json: bool) -> Session {
        let phase = match mode {
            LiveMode::Sse => Phase::Sse,
            // `now` has nothing to catch up on: one long-poll request waits
            // for future data at once (PROTOCOL.md 5.7, offset `now`).
            LiveMode::LongPoll if offset == Offset::now() => Phase::LongPoll,
            _ => Phase::CatchUp,
        };
        let json = json || stream.is_json();
        Session {
            stream,
            mode,
            phase,
            offset,
            cursor: None,
            json,
            done: false,
            last_up_to_date: false,
            no_progress: 0,
            sse: None,
            sse_failures: 0,
            reconnects: 0,
        }
    }

    pub(crate) fn into_stream(self) -> impl FuturesStream<Item = Result<Chunk>> + Send + 'static {
        futures::stream::unfold(self, |mut session| async move {
            let item = session.next_chunk().await?;
            Some((item, session))
        })
    }

    /// The next chunk, `None` at the end. An error ends the session.
    pub(crate) async fn next_chunk(&mut self) -> Option<Result<Chunk>> {
        while !self.done {
            let step = match self.phase {
                Phase::CatchUp => self.catch_up_step().await,
                Phase::LongPoll => self.long_poll_step().await,
                Phase::Sse => self.sse_step().await,
            };
            match step {
                Ok(Step::Yield(chunk)) => {
                    crate::telemetry::chunk_delivered(self.phase.name(), chunk.data.len());
                    return Some(Ok(chunk));
                }
                Ok(Step::Continue) => {}
                Err(e) => {
                    self.done = true;
                    self.sse = None;
                    return Some(Err(e.with_url(self.stream.url())));
                }
            }
        }
        None
    }

    fn is_empty_payload(&self, data: &[u8]) -> bool {
        if self.json {
            data.iter()
                .all(|b| b.is_ascii_whitespace() || *b == b'[' || *b == b']')
        } else {
            data.is_empty()
        }
    }

    /// Record a response's position and decide whether it is worth yielding.
    fn advance(
        &mut self,
        data: Bytes,
        next: Offset,
        cursor: Option<String>,
        up_to_date: bool,
        closed: bool,
        status: StatusCode,
    ) -> Step {
        let has_data = !self.is_empty_payload(&data);
        let progressed = next != self.offset;
        self.offset = next.clone();
        if cursor.is_some() {
            self.cursor = cursor;
        }
        if closed {
            self.done = true;
        }
        let up_to_date = up_to_date || closed;
        if self.mode == LiveMode::Off && up_to_date {
            self.done = true;
        }
        self.no_progress = if has_data || progressed || up_to_date {
            0
        } else {
            self.no_progress + 1
        };
        let worth = has_data || closed || ((up_to_date || self.done) && !self.last_up_to_date);
        if !worth {
            return Step::Continue;
        }
        self.last_up_to_date = up_to_date;
        Step::Yield(Chunk {
            data: if has_data { data } else { Bytes::new() },
            offset: next,
            cursor: self.cursor.clone(),
            up_to_date,
            closed,
            status: status.as_u16(),
        })
    }

    fn read_spec(&self, operation: &'static str) -> RequestSpec {
        let mut spec =
            RequestSpec::new(Method::GET, operation).query("offset", self.offset.as_str());
        if let Some(cursor) = &self.cursor {
            spec = spec.query("cursor", cursor.clone());
        }
        spec
    }

    fn after_caught_up(&mut self) {
        match self.mode {
            LiveMode::Off => {}
            LiveMode::LongPoll => self.phase = Phase::LongPoll,
            LiveMode::Sse | LiveMode::Auto => self.phase = Phase::Sse,
        }
    }

    async fn catch_up_step(&mut self) -> Result<Step> {
        let mut spec = self.read_spec("read");
        if let Some(etag) = self.stream.tail_etag_for(&self.offset) {
            spec = spec.header("if-none-match", etag)?;
        }
        let resp = self.stream.execute(&spec).await?;
        if resp.status == StatusCode::NOT_MODIFIED {
            // Same empty tail as before: nothing new.
            let offset = self.offset.clone();
            let step = self.advance(Bytes::new(), offset, None, true, false, StatusCode::OK);
            self.after_caught_up();
            return Ok(step);
        }
        if !matches!(resp.status, StatusCode::OK | StatusCode::NO_CONTENT) {
            return Err(self.stream.error_for(&spec, &resp));
        }
        let meta = self.stream.meta(&resp)?;
        self.stream.learn_content_type(meta.content_type.as_deref());
        let next = meta.require_next_offset()?;
        if self.is_empty_payload(&resp.body) && !meta.closed {
            self.stream.remember_tail_etag(
                meta.etag
                    .clone()
                    .filter(|_| next == self.offset)
                    .map(|e| (next.clone(), e)),
            );
        }
        let caught_up = meta.up_to_date
            || self.no_progress + 1 >= MAX_NO_PROGRESS
                && self.is_empty_payload(&resp.body)
                && next == self.offset;
        let step = self.advance(
            resp.body,
            next,
            meta.cursor,
            caught_up,
            meta.closed,
            resp.status,
        );
        if caught_up && !self.done {
            self.after_caught_up();
        }
        Ok(step)
    }

    async fn long_poll_step(&mut self) -> Result<Step> {
        let spec = self
            .read_spec("long-poll")
            .query("live", "long-poll")
            .live();
        let resp = self.stream.execute(&spec).await?;
        match resp.status {
            StatusCode::OK => {
                let meta = self.stream.meta(&resp)?;
                let next = meta.require_next_offset()?;
                Ok(self.advance(
                    resp.body,
                    next,
                    meta.cursor,
                    meta.up_to_date,
                    meta.closed,
                    resp.status,
                ))
            }
            StatusCode::NO_CONTENT => {
                let meta = self.stream.meta(&resp)?;
                let next = meta
                    .next_offset
                    .clone()
                    .unwrap_or_else(|| self.offset.clone());
                Ok(self.advance(
                    Bytes::new(),
                    next,
                    meta.cursor,
                    true,
                    meta.closed,
                    resp.status,
                ))
            }
            _ => Err(self.stream.error_for(&spec, &resp)),
        }
    }

    async fn sse_step(&mut self) -> Result<Step> {
        if self.sse.is_none() {
            match self.connect_sse().await? {
                Some(conn) => self.sse = Some(conn),
                None => return Ok(Step::Continue),
            }
        }
        let limit = self.stream.client().max_response_bytes();
        loop {
            let conn = self.sse.as_mut().expect("connected above");
            match conn.parser.next_event() {
                Some(Err(SseError::EventTooLarge { limit })) => {
                    return Err(Error::new(ErrorKind::ResponseTooLarge { limit })
                        .with_message("SSE event exceeds the size limit"));
                }
                Some(Ok(event)) => match event.event.as_str() {
                    "data" => {
                        let payload = if conn.base64 {
                            decode_base64(&event.data)?
                        } else {
                            event.data
                        };
                        conn.pending_bytes += payload.len();
                        if conn.pending_bytes > limit {
                            return Err(Error::new(ErrorKind::ResponseTooLarge { limit })
                                .with_message(
                                    "SSE data before a control event exceeds the size limit",
                                ));
                        }
                        conn.pending.push(payload);
                    }
                    "control" => {
                        let control = parse_control(&event.data)?;
                        conn.saw_control = true;
                        let parts = std::mem::take(&mut conn.pending);
                        conn.pending_bytes = 0;
                        let data = self.join_payloads(parts)?;
                        let step = self.advance(
                            data,
                            control.next_offset,
                            control.cursor,
                            control.up_to_date,
                            control.closed,
                            StatusCode::OK,
                        );
                        if self.done {
                            self.sse = None;
                        }
                        return Ok(step);
                    }
                    // Unknown event types are ignored (forward compatibility).
                    _ => {}
                },
                None => match conn.body.next().await {
                    Some(Ok(bytes)) => conn.parser.push(&bytes),
                    Some(Err(err)) => {
                        let reason = if err.is_timeout() {
                            "idle timeout"
                        } else {
                            "connection error"
                        };
                        tracing::debug!(error = %err, "SSE connection broke");
                        return self.sse_ended(reason).await;
                    }
                    None => return self.sse_ended("server closed the connection").await,
                },
            }
        }
    }

    fn join_payloads(&self, parts: Vec<Bytes>) -> Result<Bytes> {
        match parts.len() {
            0 => Ok(Bytes::new()),
            1 => Ok(parts.into_iter().next().unwrap_or_default()),
            _ if self.json => crate::json::merge_arrays(&parts),
            _ => Ok(parts.concat().into()),
        }
    }

    /// The connection ended before the stream closed: drop unconfirmed data
    /// and reconnect from the last control offset, with backoff when the
    /// connection delivered nothing.
    async fn sse_ended(&mut self, reason: &'static str) -> Result<Step> {
        let conn = self.sse.take();
        let progressed = conn.is_some_and(|c| c.saw_control);
        let policy = self.stream.client().retry_policy().clone();
        if progressed {
            self.sse_failures = 0;
            self.reconnects = 0;
        } else {
            self.sse_failures += 1;
            if self.mode == LiveMode::Auto && self.sse_failures >= AUTO_SSE_MAX_FAILURES {
                tracing::info!(path = %self.stream.url().path(), "SSE keeps dropping; falling back to long-poll");
                self.phase = Phase::LongPoll;
                return Ok(Step::Continue);
            }
            if self.reconnects >= policy.max_retries {
                return Err(Error::new(ErrorKind::Network).with_message(format!(
                    "SSE connection keeps ending without data ({reason}); gave up after {} reconnects",
                    self.reconnects
                )));
            }
        }
        let wait = if progressed {
            std::time::Duration::ZERO
        } else {
            policy.delay(self.reconnects)
        };
        self.reconnects += u32::from(!progressed);
        tracing::debug!(path = %self.stream.url().path(), offset = %self.offset, reason, wait_ms = wait.as_millis() as u64, "reconnecting SSE");
        crate::telemetry::reconnect("sse");
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(Step::Continue)
    }

    /// Open an SSE connection; `None` when auto mode fell back to long-poll.
    async fn connect_sse(&mut self) -> Result<Option<SseConnection>> {
        let spec = self.read_spec("sse").query("live", "sse").live();
        let resp = self.stream.inner.send(&spec).await?;
        let status = resp.status();
        let is_event_stream = header_str(resp.headers(), "content-type")
            .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("text/event-stream"));
        if status == StatusCode::OK && is_event_stream {
            let base64 = header_str(resp.headers(), names::SSE_DATA_ENCODING)
                .is_some_and(|v| v.eq_ignore_ascii_case("base64"));
            let limit = self.stream.client().max_response_bytes();
            return Ok(Some(SseConnection {
                body: resp.bytes_stream().boxed(),
                parser: SseParser::new(limit),
                base64,
                pending: Vec::new(),
                pending_bytes: 0,
                saw_control: false,
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

fn decode_base64(data: &[u8]) -> Result<Bytes> {
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
struct Control {
    next_offset: Offset,
    cursor: Option<String>,
    up_to_date: bool,
    closed: bool,
}

fn parse_control(data: &[u8]) -> Result<Control> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        stream_next_offset: Option<String>,
        stream_cursor: Option<serde_json::Value>,
        #[serde(default)]
        up_to_date: bool,
        #[serde(default)]
        stream_closed: bool,
    }
    let raw: Raw = serde_json::from_slice(data)
        .map_err(|e| Error::decode(DecodeKind::Sse, format!("malformed control event: {e}")))?;
    let next = raw
        .stream_next_offset
        .ok_or_else(|| Error::decode(DecodeKind::Sse, "control event without streamNextOffset"))?;
    let next_offset =
        Offset::from_server(&next).map_err(|e| Error::decode(DecodeKind::Sse, e.to_string()))?;
    let cursor = match raw.stream_cursor {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    };
    Ok(Control {
        next_offset,
        cursor,
        up_to_date: raw.up_to_date,
        closed: raw.stream_closed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_events_parse() {
        let c = parse_control(br#"{"streamNextOffset":"1_2","streamCursor":"9","upToDate":true}"#)
            .unwrap();
        assert_eq!(c.next_offset.as_str(), "1_2");
        assert_eq!(c.cursor.as_deref(), Some("9"));
        assert!(c.up_to_date && !c.closed);
        let c = parse_control(br#"{"streamNextOffset":"1_3","streamClosed":true}"#).unwrap();
        assert!(c.closed && c.cursor.is_none());
        for bad in [
            &b"{"[..],
            b"{}",
            b"[]",
            br#"{"streamNextOffset":"a/b"}"#,
            b"not json",
        ] {
            let e = parse_control(bad).unwrap_err();
            assert_eq!(
                e.kind(),
                &ErrorKind::Decode(DecodeKind::Sse),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn base64_ignores_line_breaks() {
        assert_eq!(
            &decode_base64(b"AQID\nBAUG\r\nBwgJCg==").unwrap()[..],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        );
        assert_eq!(decode_base64(b"").unwrap().len(), 0);
        let e = decode_base64(b"@@@").unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Base64));
    }
}
