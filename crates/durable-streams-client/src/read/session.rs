//! One state machine over catch-up, long-poll and SSE that yields [`Chunk`]s
//! and always resumes from the last delivered offset.

use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{Stream as FuturesStream, StreamExt};
use reqwest::{Method, StatusCode};

use super::sse::{SseError, SseParser};
use super::{Chunk, LiveMode};
use crate::error::{DecodeKind, Error, ErrorKind, Result};
use crate::json::{ArraySplitter, frame_elements};
use crate::offset::Offset;
use crate::request::{
    RequestSpec, ResponseMeta, error_from_response, header_str, names, read_body_limited,
};
use crate::stream::Stream;

/// SSE connections in a row that may end without a single control event
/// before auto mode gives up on SSE and long-polls instead.
const AUTO_SSE_MAX_FAILURES: u32 = 3;

/// Largest piece of a catch-up or long-poll response held and delivered at
/// once (servers may answer with a whole stream in one response).
const PIECE_BYTES: usize = 1 << 20;

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

/// A catch-up or long-poll response being read in bounded pieces.
struct ResponseBody {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    spec: RequestSpec,
    long_poll: bool,
    status: StatusCode,
    meta: ResponseMeta,
    /// JSON streams: the array is split into messages as it arrives.
    splitter: Option<ArraySplitter>,
    pending_bytes: BytesMut,
    pending_items: Vec<Bytes>,
    pending_len: usize,
    /// Units (bytes, or messages for JSON) handed out from this response.
    delivered: u64,
    /// The body has been read to its end.
    ended: bool,
    /// Units received in the current attempt (a re-request after a broken
    /// body starts over and skips what was already handed out).
    received: u64,
    retries: u32,
}

impl ResponseBody {
    /// Take up to `limit` bytes of pending data (at least one message), and
    /// for JSON the messages themselves.
    fn take_pending(&mut self, limit: usize) -> (Bytes, u64, Option<Vec<Bytes>>) {
        if self.splitter.is_some() {
            let mut size = 0;
            let mut count = 0;
            for item in &self.pending_items {
                if count > 0 && size + item.len() + 1 > limit {
                    break;
                }
                size += item.len() + 1;
                count += 1;
            }
            let items: Vec<Bytes> = self.pending_items.drain(..count).collect();
            self.pending_len -= size;
            (frame_elements(&items), count as u64, Some(items))
        } else {
            let n = limit.min(self.pending_bytes.len());
            let data = self.pending_bytes.split_to(n).freeze();
            self.pending_len -= n;
            (data, n as u64, None)
        }
    }

    /// Take a received piece, dropping units already handed out before a
    /// re-request (data at an offset never changes, so the prefix is the same).
    fn accept(&mut self, mut piece: Bytes) -> Result<()> {
        match &mut self.splitter {
            Some(splitter) => {
                splitter.feed(&piece)?;
                for item in splitter.take() {
                    self.received += 1;
                    if self.received > self.delivered + self.pending_items.len() as u64 {
                        self.pending_len += item.len() + 1;
                        self.pending_items.push(item);
                    }
                }
            }
            None => {
                let already = self.delivered + self.pending_bytes.len() as u64;
                let skip = already
                    .saturating_sub(self.received)
                    .min(piece.len() as u64) as usize;
                self.received += piece.len() as u64;
                piece.advance(skip);
                self.pending_len += piece.len();
                self.pending_bytes.extend_from_slice(&piece);
            }
        }
        Ok(())
    }
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
    body: Option<ResponseBody>,
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
            body: None,
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
            messages: None,
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
        if self.body.is_some() {
            return self.body_step().await;
        }
        let mut spec = self.read_spec("read");
        if let Some(etag) = self.stream.tail_etag_for(&self.offset) {
            spec = spec.header("if-none-match", etag)?;
        }
        let resp = self.stream.inner.send(&spec).await?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            // Same empty tail as before: nothing new.
            let offset = self.offset.clone();
            let step = self.advance(Bytes::new(), offset, None, true, false, StatusCode::OK);
            self.after_caught_up();
            return Ok(step);
        }
        if !matches!(resp.status(), StatusCode::OK | StatusCode::NO_CONTENT) {
            return Err(self.error_from(&spec, resp).await);
        }
        self.open_body(spec, resp, false)?;
        self.body_step().await
    }

    async fn long_poll_step(&mut self) -> Result<Step> {
        if self.body.is_some() {
            return self.body_step().await;
        }
        let spec = self
            .read_spec("long-poll")
            .query("live", "long-poll")
            .live();
        let resp = self.stream.inner.send(&spec).await?;
        if !matches!(resp.status(), StatusCode::OK | StatusCode::NO_CONTENT) {
            return Err(self.error_from(&spec, resp).await);
        }
        self.open_body(spec, resp, true)?;
        self.body_step().await
    }

    fn error_from(
        &self,
        spec: &RequestSpec,
        resp: reqwest::Response,
    ) -> impl Future<Output = Error> + Send + 'static {
        // Owned captures only: `&self` is not `Sync`, so it must not live
        // across the await.
        let url = self.stream.url().clone();
        let spec = spec.clone();
        async move {
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = read_body_limited(resp, 4096).await.unwrap_or_default();
            error_from_response(&spec, status, &headers, &body).with_url(&url)
        }
    }

    fn response_meta(&self, resp: &reqwest::Response) -> Result<ResponseMeta> {
        ResponseMeta::from_headers(resp.headers()).map_err(|e| {
            e.with_url(self.stream.url())
                .with_status(resp.status().as_u16())
        })
    }

    fn open_body(
        &mut self,
        spec: RequestSpec,
        resp: reqwest::Response,
        long_poll: bool,
    ) -> Result<()> {
        let meta = self.response_meta(&resp)?;
        if !long_poll {
            self.stream.learn_content_type(meta.content_type.as_deref());
        }
        let limit = self.stream.client().max_response_bytes();
        self.body = Some(ResponseBody {
            status: resp.status(),
            body: resp.bytes_stream().boxed(),
            spec,
            long_poll,
            meta,
            splitter: self.json.then(|| ArraySplitter::new(limit)),
            pending_bytes: BytesMut::new(),
            pending_items: Vec::new(),
            pending_len: 0,
            delivered: 0,
            ended: false,
            received: 0,
            retries: 0,
        });
        Ok(())
    }

    /// Read the open response: a piece of at most [`PIECE_BYTES`] (its
    /// offset is where the response started, since the server gives no
    /// position inside a response), or at its end the final piece with the
    /// response's offsets. A broken body is requested again and the part
    /// already handed out is skipped.
    async fn body_step(&mut self) -> Result<Step> {
        let piece_limit = PIECE_BYTES.min(self.stream.client().max_response_bytes());
        loop {
            let Some(body) = self.body.as_mut() else {
                return Ok(Step::Continue);
            };
            // A full piece, or more than one piece left at the end: hand out
            // a piece. Its offset is where the response started.
            if body.pending_len >= piece_limit && !(body.ended && body.pending_len == piece_limit) {
                let (data, units, messages) = body.take_pending(piece_limit);
                body.delivered += units;
                // Progress: a later break gets a fresh retry budget.
                body.retries = 0;
                let cursor = body.meta.cursor.clone();
                let status = body.status;
                self.no_progress = 0;
                self.last_up_to_date = false;
                return Ok(Step::Yield(Chunk {
                    data,
                    offset: self.offset.clone(),
                    cursor: cursor.or_else(|| self.cursor.clone()),
                    up_to_date: false,
                    closed: false,
                    status: status.as_u16(),
                    messages,
                }));
            }
            if body.ended {
                let Some(mut body) = self.body.take() else {
                    return Ok(Step::Continue);
                };
                if let Some(splitter) = &body.splitter {
                    splitter
                        .finish()
                        .map_err(|e| e.with_url(self.stream.url()))?;
                }
                let handed_out = body.delivered;
                let (data, units, messages) = body.take_pending(usize::MAX);
                let empty = handed_out + units == 0;
                return self.finish_response(body, data, messages, empty);
            }
            match body.body.next().await {
                Some(Ok(piece)) => body.accept(piece)?,
                Some(Err(err)) => self.retry_body(err).await?,
                None => body.ended = true,
            }
        }
    }

    /// Re-request a response whose body broke, with backoff.
    async fn retry_body(&mut self, err: reqwest::Error) -> Result<()> {
        let policy = self.stream.client().retry_policy().clone();
        let Some(body) = self.body.as_mut() else {
            return Ok(());
        };
        if body.retries >= policy.max_retries {
            self.body = None;
            return Err(Error::new(if err.is_timeout() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Network
            })
            .with_source(err)
            .with_url(self.stream.url()));
        }
        let wait = policy.delay(body.retries);
        body.retries += 1;
        tracing::debug!(path = %self.stream.url().path(), error = %err, wait_ms = wait.as_millis() as u64, "response body broke; requesting it again");
        crate::telemetry::retry(body.spec.operation, "body");
        tokio::time::sleep(wait).await;
        let spec = body.spec.clone();
        let resp = self.stream.inner.send(&spec).await?;
        if !matches!(resp.status(), StatusCode::OK | StatusCode::NO_CONTENT) {
            self.body = None;
            return Err(self.error_from(&spec, resp).await);
        }
        let meta = self.response_meta(&resp)?;
        let limit = self.stream.client().max_response_bytes();
        if let Some(body) = self.body.as_mut() {
            body.status = resp.status();
            body.body = resp.bytes_stream().boxed();
            body.meta = meta;
            body.received = 0;
            body.ended = false;
            body.pending_bytes.clear();
            body.pending_items.clear();
            body.pending_len = 0;
            if body.splitter.is_some() {
                body.splitter = Some(ArraySplitter::new(limit));
            }
        }
        Ok(())
    }

    fn finish_response(
        &mut self,
        body: ResponseBody,
        data: Bytes,
        messages: Option<Vec<Bytes>>,
        empty: bool,
    ) -> Result<Step> {
        let step = self.finish_response_step(body, data, empty)?;
        Ok(match step {
            // The split messages travel with the chunk when its data is kept.
            Step::Yield(mut chunk) if !chunk.data.is_empty() => {
                chunk.messages = messages;
                Step::Yield(chunk)
            }
            step => step,
        })
    }

    fn finish_response_step(
        &mut self,
        body: ResponseBody,
        data: Bytes,
        empty: bool,
    ) -> Result<Step> {
        let ResponseBody {
            meta,
            status,
            long_poll,
            ..
        } = body;
        if long_poll {
            if status == StatusCode::NO_CONTENT {
                let next = meta
                    .next_offset
                    .clone()
                    .unwrap_or_else(|| self.offset.clone());
                return Ok(self.advance(
                    Bytes::new(),
                    next,
                    meta.cursor,
                    true,
                    meta.closed,
                    status,
                ));
            }
            let next = meta
                .require_next_offset()
                .map_err(|e| e.with_url(self.stream.url()))?;
            return Ok(self.advance(
                data,
                next,
                meta.cursor,
                meta.up_to_date,
                meta.closed,
                status,
            ));
        }
        let next = meta
            .require_next_offset()
            .map_err(|e| e.with_url(self.stream.url()))?;
        if empty && !meta.closed {
            self.stream.remember_tail_etag(
                meta.etag
                    .clone()
                    .filter(|_| next == self.offset)
                    .map(|e| (next.clone(), e)),
            );
        }
        let caught_up = meta.up_to_date
            || self.no_progress + 1 >= MAX_NO_PROGRESS && empty && next == self.offset;
        let step = self.advance(data, next, meta.cursor, caught_up, meta.closed, status);
        if caught_up && !self.done {
            self.after_caught_up();
        }
        Ok(step)
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

/// Fuzzing entry: [`parse_control`] on server bytes, as
/// `(next offset, cursor, up to date, closed)`.
pub(crate) fn fuzz_entry_control(data: &[u8]) -> Result<(Offset, Option<String>, bool, bool)> {
    parse_control(data).map(|c| (c.next_offset, c.cursor, c.up_to_date, c.closed))
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
