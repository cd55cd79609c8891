//! One state machine over catch-up, long-poll and SSE that yields [`Chunk`]s
//! and always resumes from the last delivered offset.

use std::time::{Duration, Instant};

use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{Stream as FuturesStream, StreamExt};
use reqwest::{Method, StatusCode};

use super::guard::{
    AUTO_SSE_MAX_SHORT, CLOCK_CHECK, ClockWatch, DEFAULT_MAX_NO_PROGRESS, DEFAULT_SSE_MAX_AGE,
    ProgressGuard, SSE_SHORT, SseEnd, catch_up_stalled, check_forward, long_poll_stalled, sse_end,
};
use super::sse::{SseError, SseParser};
use super::{Chunk, LiveMode};
use crate::error::{DecodeKind, Error, ErrorKind, Result};
use crate::json::{ArraySplitter, frame_elements};
use crate::offset::Offset;
use crate::request::{
    RequestSpec, ResponseMeta, error_from_response, header_str, names, read_body_limited,
};
use crate::retry::Backoff;
use crate::stream::Stream;

/// Largest piece of a catch-up or long-poll response held and delivered at
/// once (servers may answer with a whole stream in one response).
const PIECE_BYTES: usize = 1 << 20;

/// Longest SSE connection age accepted (keeps deadline arithmetic finite).
const MAX_SSE_AGE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Per-read settings (see [`super::ReadBuilder`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadOptions {
    /// Answers in a row that do not move the read forward before it ends
    /// with `NoProgress`.
    pub(crate) max_no_progress: u32,
    /// Longest life of one SSE connection before reconnecting.
    pub(crate) sse_max_age: Duration,
    /// Live modes retry connection errors, 5xx and 429 without a budget
    /// (capped delays, reset on progress). Consumers and pipelines turn this
    /// off: their own reconnect loop (one `Backoff`) rides out outages and
    /// shows each failure to their error handling.
    pub(crate) ride_out_outages: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_no_progress: DEFAULT_MAX_NO_PROGRESS,
            sse_max_age: DEFAULT_SSE_MAX_AGE,
            ride_out_outages: true,
        }
    }
}

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
    /// When the connection opened (its age decides whether its end is healthy).
    opened: Instant,
    /// A control event moved the offset or confirmed data.
    moved: bool,
    /// The client ended it on purpose (max age, clock jump).
    deliberate: bool,
}

/// A catch-up or long-poll response being read in bounded pieces.
struct ResponseBody {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    spec: RequestSpec,
    long_poll: bool,
    status: StatusCode,
    meta: ResponseMeta,
    /// The response's next offset (checked when the headers arrived).
    next: Offset,
    /// How long the request took until its headers arrived.
    elapsed: Duration,
    /// The cursor the request carried.
    sent_cursor: Option<String>,
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

/// One answer's position and payload, as [`Session::advance`] records it.
struct Answer {
    data: Bytes,
    messages: Option<Vec<Bytes>>,
    /// `data` holds at least one message (JSON) or byte.
    has_data: bool,
    /// The whole answer carried data (pieces may have gone out already).
    any_data: bool,
    next: Offset,
    cursor: Option<String>,
    up_to_date: bool,
    closed: bool,
    status: StatusCode,
}

/// Check a 2xx read answer's protocol headers: the next offset always, and
/// on live answers of an open stream the cursor. A missing one is a typed
/// error naming it (proxies have been seen stripping unknown headers).
pub(crate) fn check_read_headers(meta: &ResponseMeta, live: bool) -> Result<Offset> {
    let Some(next) = meta.next_offset.clone() else {
        return Err(Error::decode(
            DecodeKind::Header,
            "read answer has no Stream-Next-Offset header (every successful read must \
             carry it; a proxy may be stripping it)",
        ));
    };
    if live && !meta.closed && meta.cursor.is_none() {
        return Err(Error::decode(
            DecodeKind::Header,
            "long-poll answer has no Stream-Cursor header (live answers of an open stream \
             must carry it; a proxy may be stripping it)",
        ));
    }
    Ok(next)
}

/// Await `fut`; `None` when the clocks show that the machine slept or was
/// paused meanwhile (the connection may be dead: reconnect).
async fn watched<F: Future>(clock: &mut ClockWatch, fut: F) -> Option<F::Output> {
    *clock = ClockWatch::new();
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Some(out),
            _ = tokio::time::sleep(CLOCK_CHECK) => {
                if clock.jumped() {
                    return None;
                }
            }
        }
    }
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
    sse: Option<SseConnection>,
    body: Option<ResponseBody>,
    /// One retry budget for the whole read: request retries, body
    /// re-requests, reconnects and no-progress waits. Unbounded for live
    /// modes (reset on progress), the policy's budget for `LiveMode::Off`.
    backoff: Backoff,
    guard: ProgressGuard,
    /// Short SSE connections in a row (auto mode falls back after a few).
    short_sse: u32,
    sse_max_age: Duration,
    clock: ClockWatch,
}

impl Session {
    /// A session for a consumer or pipeline, whose reconnect loop handles
    /// outages (request retries use the client's budget).
    pub(crate) fn new(stream: Stream, offset: Offset, mode: LiveMode, json: bool) -> Session {
        let options = ReadOptions {
            ride_out_outages: false,
            ..ReadOptions::default()
        };
        Session::with_options(stream, offset, mode, json, options)
    }

    pub(crate) fn with_options(
        stream: Stream,
        offset: Offset,
        mode: LiveMode,
        json: bool,
        options: ReadOptions,
    ) -> Session {
        let phase = match mode {
            LiveMode::Sse => Phase::Sse,
            // `now` has nothing to catch up on: one long-poll request waits
            // for future data at once (PROTOCOL.md 5.7, offset `now`).
            LiveMode::LongPoll if offset == Offset::now() => Phase::LongPoll,
            _ => Phase::CatchUp,
        };
        let json = json || stream.is_json();
        let policy = stream.client().retry_policy();
        let backoff = if mode.is_live() && options.ride_out_outages {
            Backoff::unbounded(policy)
        } else {
            Backoff::new(policy)
        };
        Session {
            mode,
            phase,
            offset,
            cursor: None,
            json,
            done: false,
            last_up_to_date: false,
            sse: None,
            body: None,
            backoff,
            guard: ProgressGuard::new(options.max_no_progress),
            short_sse: 0,
            sse_max_age: options
                .sse_max_age
                .clamp(Duration::from_millis(1), MAX_SSE_AGE),
            clock: ClockWatch::new(),
            stream,
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
                    self.body = None;
                    return Some(Err(e.with_url(self.stream.url())));
                }
            }
        }
        None
    }

    /// The read moved forward: a later failure backs off from the start.
    fn progressed(&mut self) {
        self.guard.progress();
        self.backoff.reset();
    }

    /// An answer that did not move the read forward: count it, back off
    /// (the next request carries a cache buster), or give up.
    async fn stall(&mut self, what: &'static str) -> Result<()> {
        self.guard.stall(what)?;
        tracing::debug!(path = %self.stream.url().path(), offset = %self.offset, what, strikes = self.guard.strikes(), "answer did not move the read forward; backing off");
        crate::telemetry::retry(self.phase.name(), "no_progress");
        if !self.backoff.wait(None).await {
            return Err(self.guard.give_up(what));
        }
        Ok(())
    }

    /// Record an answer's position (only forward) and decide whether it is
    /// worth yielding. Returns the step and whether the offset moved.
    fn advance(&mut self, a: Answer) -> Result<(Step, bool)> {
        let moved = check_forward(&self.offset, &a.next, a.any_data)?;
        self.offset = a.next.clone();
        if a.cursor.is_some() {
            self.cursor = a.cursor;
        }
        if a.closed {
            self.done = true;
        }
        let up_to_date = a.up_to_date || a.closed;
        if self.mode == LiveMode::Off && up_to_date {
            self.done = true;
        }
        // Whether the answer was progress is the caller's call (an
        // up-to-date answer can still be a replayed one).
        let worth = a.has_data || a.closed || ((up_to_date || self.done) && !self.last_up_to_date);
        if !worth {
            return Ok((Step::Continue, moved));
        }
        self.last_up_to_date = up_to_date;
        let (data, messages) = if a.has_data {
            (a.data, a.messages)
        } else {
            (Bytes::new(), None)
        };
        Ok((
            Step::Yield(Chunk {
                data,
                offset: a.next,
                exact: true,
                cursor: self.cursor.clone(),
                up_to_date,
                closed: a.closed,
                status: a.status.as_u16(),
                messages,
            }),
            moved,
        ))
    }

    fn read_spec(&self, operation: &'static str) -> RequestSpec {
        let mut spec =
            RequestSpec::new(Method::GET, operation).query("offset", self.offset.as_str());
        if let Some(cursor) = &self.cursor {
            spec = spec.query("cursor", cursor.clone());
        }
        if self.guard.bust_cache() {
            // After a repeated answer: a URL no cache has seen.
            spec = spec.query("_nc", format!("{:016x}", fastrand::u64(..)));
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
        let started = Instant::now();
        let resp = self
            .stream
            .inner
            .send_retrying(&spec, &mut self.backoff)
            .await?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            // Same empty tail as before: nothing new.
            let offset = self.offset.clone();
            let (step, _) = self.advance(Answer {
                data: Bytes::new(),
                messages: None,
                has_data: false,
                any_data: false,
                next: offset,
                cursor: None,
                up_to_date: true,
                closed: false,
                status: StatusCode::OK,
            })?;
            self.backoff.reset();
            self.after_caught_up();
            return Ok(step);
        }
        if !matches!(resp.status(), StatusCode::OK | StatusCode::NO_CONTENT) {
            return Err(self.error_from(&spec, resp).await);
        }
        self.open_body(spec, resp, false, started.elapsed())?;
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
        let started = Instant::now();
        let sent = watched(
            &mut self.clock,
            self.stream.inner.send_retrying(&spec, &mut self.backoff),
        )
        .await;
        let Some(resp) = sent else {
            tracing::info!(path = %self.stream.url().path(), offset = %self.offset, "the clock jumped (sleep or pause); long-polling again");
            crate::telemetry::reconnect("long-poll");
            return Ok(Step::Continue);
        };
        let resp = resp?;
        if !matches!(resp.status(), StatusCode::OK | StatusCode::NO_CONTENT) {
            return Err(self.error_from(&spec, resp).await);
        }
        self.open_body(spec, resp, true, started.elapsed())?;
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

    /// The response's protocol headers, checked: `(meta, next offset)`.
    fn response_meta(
        &self,
        resp: &reqwest::Response,
        long_poll: bool,
    ) -> Result<(ResponseMeta, Offset)> {
        let status = resp.status().as_u16();
        let meta = ResponseMeta::from_headers(resp.headers())
            .map_err(|e| e.with_url(self.stream.url()).with_status(status))?;
        let next = check_read_headers(&meta, long_poll)
            .map_err(|e| e.with_url(self.stream.url()).with_status(status))?;
        Ok((meta, next))
    }

    fn open_body(
        &mut self,
        spec: RequestSpec,
        resp: reqwest::Response,
        long_poll: bool,
        elapsed: Duration,
    ) -> Result<()> {
        let (meta, next) = self.response_meta(&resp, long_poll)?;
        // The next offset arrives with the headers: a backwards one fails
        // before any of the body is delivered.
        check_forward(&self.offset, &next, false)?;
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
            next,
            elapsed,
            sent_cursor: self.cursor.clone(),
            splitter: self.json.then(|| ArraySplitter::new(limit)),
            pending_bytes: BytesMut::new(),
            pending_items: Vec::new(),
            pending_len: 0,
            delivered: 0,
            ended: false,
            received: 0,
        });
        Ok(())
    }

    /// Read the open response: a piece of at most [`PIECE_BYTES`] (its
    /// offset is where the response started, since the server gives no
    /// position inside a response: not an exact resume position), or at its
    /// end the final piece with the response's offsets. A broken body is
    /// requested again and the part already handed out is skipped.
    async fn body_step(&mut self) -> Result<Step> {
        let piece_limit = PIECE_BYTES.min(self.stream.client().max_response_bytes());
        loop {
            let Some(body) = self.body.as_mut() else {
                return Ok(Step::Continue);
            };
            // A full piece, or more than one piece left at the end: hand out
            // a piece. Its offset is where the response started.
            if body.pending_len >= piece_limit && !(body.ended && body.pending_len == piece_limit) {
                // Data is delivered only when the offset moves forward.
                check_forward(&self.offset, &body.next, true)?;
                let (data, units, messages) = body.take_pending(piece_limit);
                body.delivered += units;
                let cursor = body.meta.cursor.clone();
                let status = body.status;
                // Progress: a later break gets a fresh retry budget.
                self.progressed();
                self.last_up_to_date = false;
                return Ok(Step::Yield(Chunk {
                    data,
                    offset: self.offset.clone(),
                    exact: false,
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
                return self
                    .finish_response(body, data, messages, units, handed_out)
                    .await;
            }
            match body.body.next().await {
                Some(Ok(piece)) => body.accept(piece)?,
                Some(Err(err)) => self.retry_body(err).await?,
                None => body.ended = true,
            }
        }
    }

    /// Re-request a response whose body broke, drawing on the read's backoff.
    async fn retry_body(&mut self, err: reqwest::Error) -> Result<()> {
        let Some(body) = self.body.as_ref() else {
            return Ok(());
        };
        let spec = body.spec.clone();
        let long_poll = body.long_poll;
        let Some(wait) = self.backoff.next_delay(None) else {
            self.body = None;
            return Err(Error::new(if err.is_timeout() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Network
            })
            .with_source(err)
            .with_url(self.stream.url()));
        };
        tracing::debug!(path = %self.stream.url().path(), error = %err, wait_ms = wait.as_millis() as u64, "response body broke; requesting it again");
        crate::telemetry::retry(spec.operation, "body");
        tokio::time::sleep(wait).await;
        let started = Instant::now();
        let resp = self
            .stream
            .inner
            .send_retrying(&spec, &mut self.backoff)
            .await?;
        if !matches!(resp.status(), StatusCode::OK | StatusCode::NO_CONTENT) {
            self.body = None;
            return Err(self.error_from(&spec, resp).await);
        }
        let (meta, next) = self.response_meta(&resp, long_poll)?;
        let limit = self.stream.client().max_response_bytes();
        if let Some(body) = self.body.as_mut() {
            body.status = resp.status();
            body.body = resp.bytes_stream().boxed();
            body.meta = meta;
            body.next = next;
            body.elapsed = started.elapsed();
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

    /// A response was read to its end: record its position, judge whether
    /// it moved the read forward (backing off when not) and yield what is
    /// worth yielding. Whether it carried messages is decided by their
    /// count, never by looking at the bytes (`[]` is a message).
    async fn finish_response(
        &mut self,
        body: ResponseBody,
        data: Bytes,
        messages: Option<Vec<Bytes>>,
        units: u64,
        handed_out: u64,
    ) -> Result<Step> {
        let ResponseBody {
            meta,
            next,
            status,
            long_poll,
            elapsed,
            sent_cursor,
            ..
        } = body;
        let has_data = units > 0;
        let any_data = has_data || handed_out > 0;
        if long_poll {
            let got_cursor = meta.cursor.clone();
            let up_to_date = meta.up_to_date || status == StatusCode::NO_CONTENT;
            let (step, moved) = self.advance(Answer {
                data,
                messages,
                has_data,
                any_data,
                next,
                cursor: meta.cursor,
                up_to_date,
                closed: meta.closed,
                status,
            })?;
            if long_poll_stalled(
                moved,
                any_data,
                meta.closed,
                elapsed,
                sent_cursor.as_deref(),
                got_cursor.as_deref(),
            ) {
                self.stall("long-poll answers").await?;
            } else {
                self.progressed();
            }
            return Ok(step);
        }
        if !any_data && !meta.closed {
            self.stream.remember_tail_etag(
                meta.etag
                    .clone()
                    .filter(|_| next == self.offset)
                    .map(|e| (next.clone(), e)),
            );
        }
        let (step, moved) = self.advance(Answer {
            data,
            messages,
            has_data,
            any_data,
            next,
            cursor: meta.cursor,
            up_to_date: meta.up_to_date,
            closed: meta.closed,
            status,
        })?;
        if meta.up_to_date && !self.done {
            self.after_caught_up();
        }
        if catch_up_stalled(moved, any_data, meta.up_to_date, meta.closed) {
            self.stall("catch-up answers").await?;
        } else {
            self.progressed();
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
        let max_age = self.sse_max_age;
        loop {
            let Some(conn) = self.sse.as_mut() else {
                return Ok(Step::Continue);
            };
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
                        let parts = std::mem::take(&mut conn.pending);
                        conn.pending_bytes = 0;
                        let (data, messages, has_data) = join_payloads(self.json, parts)?;
                        let (step, moved) = self.advance(Answer {
                            data,
                            messages,
                            has_data,
                            any_data: has_data,
                            next: control.next_offset,
                            cursor: control.cursor,
                            up_to_date: control.up_to_date,
                            closed: control.closed,
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
                        return Ok(step);
                    }
                    // Unknown event types are ignored (forward compatibility).
                    _ => {}
                },
                None => {
                    let deadline = tokio::time::Instant::from_std(conn.opened + max_age);
                    let wake = tokio::select! {
                        next = conn.body.next() => Wake::Body(next),
                        _ = tokio::time::sleep_until(deadline) => Wake::Expired,
                        _ = tokio::time::sleep(CLOCK_CHECK) => Wake::Tick,
                    };
                    match wake {
                        Wake::Body(Some(Ok(bytes))) => conn.parser.push(&bytes),
                        Wake::Body(Some(Err(err))) => {
                            let reason = if err.is_timeout() {
                                "idle timeout"
                            } else {
                                "connection error"
                            };
                            tracing::debug!(error = %err, "SSE connection broke");
                            return self.sse_ended(reason).await;
                        }
                        Wake::Body(None) => {
                            return self.sse_ended("server closed the connection").await;
                        }
                        Wake::Expired => {
                            conn.deliberate = true;
                            return self.sse_ended("maximum connection age").await;
                        }
                        Wake::Tick => {
                            if self.clock.jumped() {
                                if let Some(conn) = self.sse.as_mut() {
                                    conn.deliberate = true;
                                }
                                return self.sse_ended("the clock jumped (sleep or pause)").await;
                            }
                        }
                    }
                }
            }
        }
    }

    /// The connection ended before the stream closed: drop unconfirmed data
    /// and reconnect from the last control offset. Connections that lasted
    /// (the server's periodic close) or moved the read reconnect at once;
    /// short ones that moved nothing back off and count towards the
    /// no-progress bound; auto mode long-polls after a few short ones.
    async fn sse_ended(&mut self, reason: &'static str) -> Result<Step> {
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
        let spec = self.read_spec("sse").query("live", "sse").live();
        let sent = watched(
            &mut self.clock,
            self.stream.inner.send_retrying(&spec, &mut self.backoff),
        )
        .await;
        let Some(resp) = sent else {
            tracing::info!(path = %self.stream.url().path(), "the clock jumped (sleep or pause); connecting SSE again");
            return Ok(None);
        };
        let resp = resp?;
        let status = resp.status();
        let is_event_stream = header_str(resp.headers(), "content-type")
            .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("text/event-stream"));
        if status == StatusCode::OK && is_event_stream {
            let base64 = header_str(resp.headers(), names::SSE_DATA_ENCODING)
                .is_some_and(|v| v.eq_ignore_ascii_case("base64"));
            let limit = self.stream.client().max_response_bytes();
            self.clock = ClockWatch::new();
            return Ok(Some(SseConnection {
                body: resp.bytes_stream().boxed(),
                parser: SseParser::new(limit),
                base64,
                pending: Vec::new(),
                pending_bytes: 0,
                opened: Instant::now(),
                moved: false,
                deliberate: false,
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
    Body(Option<reqwest::Result<Bytes>>),
    Expired,
    Tick,
}

/// Join the data events confirmed by one control event: `(data, messages,
/// has_data)`. For JSON the messages are counted by splitting each event's
/// array, so a message that is `[]` or `{}` counts.
fn join_payloads(json: bool, parts: Vec<Bytes>) -> Result<(Bytes, Option<Vec<Bytes>>, bool)> {
    if !json {
        let data: Bytes = match parts.len() {
            0 => Bytes::new(),
            1 => parts.into_iter().next().unwrap_or_default(),
            _ => parts.concat().into(),
        };
        let has_data = !data.is_empty();
        return Ok((data, None, has_data));
    }
    let mut messages = Vec::new();
    for part in &parts {
        messages.extend(crate::json::split_messages(part)?);
    }
    if messages.is_empty() {
        return Ok((Bytes::new(), None, false));
    }
    let data = if parts.len() == 1 {
        parts.into_iter().next().unwrap_or_default()
    } else {
        frame_elements(&messages)
    };
    Ok((data, Some(messages), true))
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

    fn meta(next: Option<&str>, cursor: Option<&str>, closed: bool) -> ResponseMeta {
        ResponseMeta {
            next_offset: next.map(|n| Offset::parse(n).unwrap()),
            cursor: cursor.map(str::to_owned),
            closed,
            ..ResponseMeta::default()
        }
    }

    #[test]
    fn stripped_headers_are_typed_errors_naming_the_header() {
        assert_eq!(
            check_read_headers(&meta(Some("0001"), None, false), false)
                .unwrap()
                .as_str(),
            "0001"
        );
        let e = check_read_headers(&meta(None, Some("1"), false), false).unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Header));
        assert!(e.to_string().contains("Stream-Next-Offset"), "{e}");
        assert!(e.to_string().contains("proxy"), "{e}");
        // Long-poll answers (200 and 204) of an open stream need a cursor.
        let e = check_read_headers(&meta(Some("0001"), None, false), true).unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Header));
        assert!(e.to_string().contains("Stream-Cursor"), "{e}");
        // ... except when the stream is closed.
        assert!(check_read_headers(&meta(Some("0001"), None, true), true).is_ok());
        assert!(check_read_headers(&meta(Some("0001"), Some("7"), false), true).is_ok());
        let e = check_read_headers(&meta(None, None, true), true).unwrap_err();
        assert!(e.to_string().contains("Stream-Next-Offset"), "{e}");
    }

    #[test]
    fn sse_json_messages_are_counted_not_sniffed() {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        // One message that is an empty array, one that is an empty object.
        let (data, messages, has) = join_payloads(true, vec![b("[[]]")]).unwrap();
        assert!(has);
        assert_eq!(&data[..], b"[[]]");
        assert_eq!(messages.unwrap().len(), 1);
        let (_, messages, has) =
            join_payloads(true, vec![b("[{}]"), b("[]"), b("[[[]]]")]).unwrap();
        assert!(has);
        let messages = messages.unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(&messages[1][..], b"[[]]");
        // No messages at all.
        let (data, messages, has) = join_payloads(true, vec![b("[]"), b(" [ ] ")]).unwrap();
        assert!(!has && data.is_empty() && messages.is_none());
        let (_, _, has) = join_payloads(true, vec![]).unwrap();
        assert!(!has);
        // Not an array: a decode error, never a panic.
        assert!(join_payloads(true, vec![b("{}")]).is_err());
        // Bytes: emptiness is length.
        let (data, _, has) = join_payloads(false, vec![b("a"), b("b")]).unwrap();
        assert!(has && &data[..] == b"ab");
        assert!(!join_payloads(false, vec![b("")]).unwrap().2);
    }

    fn unreachable_session(mode: LiveMode, max_no_progress: u32) -> Session {
        let stream = crate::Client::builder()
            .retry_policy(
                crate::RetryPolicy::default()
                    .initial_delay(Duration::from_millis(100))
                    .max_delay(Duration::from_secs(30))
                    .max_retries(3),
            )
            .build()
            .unwrap()
            .stream("http://127.0.0.1:9/v1/stream/x")
            .unwrap();
        Session::with_options(
            stream,
            Offset::parse("0001").unwrap(),
            mode,
            false,
            ReadOptions {
                max_no_progress,
                ..ReadOptions::default()
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn stalls_back_off_exponentially_bust_caches_and_end_with_no_progress() {
        let mut s = unreachable_session(LiveMode::LongPoll, 10);
        let spec = s.read_spec("long-poll");
        assert!(
            spec.query.iter().all(|(k, _)| *k != "_nc"),
            "no buster at first"
        );
        let started = tokio::time::Instant::now();
        let mut waits = Vec::new();
        let mut err = None;
        for _ in 0..20 {
            let before = tokio::time::Instant::now();
            match s.stall("long-poll answers").await {
                Ok(()) => waits.push(before.elapsed()),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
            let spec = s.read_spec("long-poll");
            assert!(
                spec.query.iter().any(|(k, _)| *k == "_nc"),
                "buster after a repeat"
            );
        }
        let err = err.expect("gave up");
        assert_eq!(err.kind(), &ErrorKind::NoProgress { attempts: 10 });
        assert_eq!(waits.len(), 9, "a handful of tries, each after a wait");
        assert!(
            waits.iter().all(|w| *w >= Duration::from_millis(50)),
            "{waits:?}"
        );
        assert!(waits[8] > waits[0] * 8, "exponential: {waits:?}");
        assert!(
            waits.iter().all(|w| *w <= Duration::from_secs(30)),
            "capped: {waits:?}"
        );
        assert!(started.elapsed() > Duration::from_secs(10));
        // Progress resets the count and drops the buster.
        let mut s = unreachable_session(LiveMode::LongPoll, 3);
        s.stall("x").await.unwrap();
        s.stall("x").await.unwrap();
        s.progressed();
        assert!(s.read_spec("x").query.iter().all(|(k, _)| *k != "_nc"));
        s.stall("x").await.unwrap();
        s.stall("x").await.unwrap();
        assert!(s.stall("x").await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn an_up_to_date_answer_is_not_progress_by_itself() {
        // A replayed long-poll 204 says up-to-date every time: the strikes
        // must still add up to the bound.
        let mut s = unreachable_session(LiveMode::LongPoll, 3);
        let at = s.offset.clone();
        let mut ended = None;
        for i in 0..5 {
            let (_, moved) = s
                .advance(Answer {
                    data: Bytes::new(),
                    messages: None,
                    has_data: false,
                    any_data: false,
                    next: at.clone(),
                    cursor: Some("7".into()),
                    up_to_date: true,
                    closed: false,
                    status: StatusCode::NO_CONTENT,
                })
                .unwrap();
            assert!(!moved);
            if let Err(e) = s.stall("long-poll answers").await {
                ended = Some((i, e));
                break;
            }
        }
        let (i, e) = ended.expect("bounded");
        assert_eq!(i, 2);
        assert_eq!(e.kind(), &ErrorKind::NoProgress { attempts: 3 });
    }

    #[tokio::test]
    async fn offsets_going_backwards_or_repeating_with_data_end_the_read() {
        let mut s = unreachable_session(LiveMode::Sse, 3);
        let answer = |next: &str, data: &'static [u8]| Answer {
            data: Bytes::from_static(data),
            messages: None,
            has_data: !data.is_empty(),
            any_data: !data.is_empty(),
            next: Offset::parse(next).unwrap(),
            cursor: None,
            up_to_date: false,
            closed: false,
            status: StatusCode::OK,
        };
        assert!(s.advance(answer("0002", b"x")).unwrap().1);
        let e = s.advance(answer("0002", b"y")).err().unwrap();
        assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Offset));
        let e = s.advance(answer("0001", b"")).err().unwrap();
        assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Offset));
        assert_eq!(s.offset.as_str(), "0002", "the offset never moved back");
    }

    #[tokio::test(start_paused = true)]
    async fn catch_up_only_reads_are_bounded_by_the_retry_budget() {
        // LiveMode::Off: the client's budget (3 retries) ends it first.
        let mut s = unreachable_session(LiveMode::Off, 10);
        for _ in 0..3 {
            s.stall("catch-up answers").await.unwrap();
        }
        let e = s.stall("catch-up answers").await.unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::NoProgress { attempts: 4 });
        // Live modes: unbounded backoff, the guard's bound ends it.
        let mut s = unreachable_session(LiveMode::Sse, 6);
        for _ in 0..5 {
            s.stall("SSE connections").await.unwrap();
        }
        assert!(s.stall("SSE connections").await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn short_sse_connections_back_off_and_auto_falls_back_to_long_poll() {
        fn conn(age: Duration, moved: bool) -> SseConnection {
            SseConnection {
                body: futures::stream::empty().boxed(),
                parser: SseParser::new(1024),
                base64: false,
                pending: Vec::new(),
                pending_bytes: 0,
                opened: Instant::now() - age,
                moved,
                deliberate: false,
            }
        }
        let short = Duration::from_millis(20);
        let long = Duration::from_secs(30);
        // Auto: three short connections in a row, even ones that delivered
        // a control event, and the read long-polls.
        let mut s = unreachable_session(LiveMode::Auto, 10);
        s.phase = Phase::Sse;
        for moved in [true, false] {
            s.sse = Some(conn(short, moved));
            s.sse_ended("test").await.unwrap();
            assert_eq!(s.phase, Phase::Sse);
        }
        s.sse = Some(conn(short, true));
        s.sse_ended("test").await.unwrap();
        assert_eq!(s.phase, Phase::LongPoll);
        // A connection that lasted resets the count and is not backed off.
        let mut s = unreachable_session(LiveMode::Auto, 10);
        s.phase = Phase::Sse;
        for age in [short, short, long, short, short] {
            s.sse = Some(conn(age, false));
            s.sse_ended("test").await.unwrap();
            assert_eq!(s.phase, Phase::Sse);
        }
        // SSE mode: short empty connections are backed off and bounded;
        // the server's periodic close is free.
        let mut s = unreachable_session(LiveMode::Sse, 4);
        s.phase = Phase::Sse;
        let before = tokio::time::Instant::now();
        for _ in 0..50 {
            s.sse = Some(conn(long, false));
            s.sse_ended("periodic close").await.unwrap();
        }
        assert_eq!(
            before.elapsed(),
            Duration::ZERO,
            "healthy closes never wait"
        );
        let mut ended = None;
        for i in 0..10 {
            s.sse = Some(conn(short, false));
            if let Err(e) = s.sse_ended("cut").await {
                ended = Some((i, e));
                break;
            }
        }
        let (i, e) = ended.expect("bounded");
        assert_eq!(i, 3);
        assert_eq!(e.kind(), &ErrorKind::NoProgress { attempts: 4 });
        assert!(before.elapsed() >= Duration::from_millis(150), "backed off");
        // A deliberate reconnect (max age, clock jump) is healthy.
        let mut s = unreachable_session(LiveMode::Auto, 2);
        s.phase = Phase::Sse;
        for _ in 0..5 {
            let mut c = conn(short, false);
            c.deliberate = true;
            s.sse = Some(c);
            s.sse_ended("max age").await.unwrap();
        }
        assert_eq!(s.phase, Phase::Sse);
    }

    mod scripted {
        use super::*;
        use crate::testing::{Reply, ScriptedServer};
        use futures::StreamExt;

        fn client() -> crate::Client {
            crate::Client::builder()
                .retry_policy(
                    crate::RetryPolicy::default()
                        .initial_delay(Duration::from_millis(10))
                        .max_delay(Duration::from_millis(100)),
                )
                .build()
                .unwrap()
        }

        fn at(next: &str) -> Reply {
            Reply::status(200)
                .with_header("content-type", "text/plain")
                .with_header("stream-next-offset", next)
        }

        #[tokio::test]
        async fn a_cache_replaying_an_empty_long_poll_answer_gets_a_handful_of_requests() {
            // Catch-up: up to date at 0001; every long-poll: the same
            // cached 204, at once, whatever the query.
            let server = ScriptedServer::start(|req, _| {
                if req.target.contains("live=long-poll") {
                    Reply::status(204)
                        .with_header("stream-next-offset", "0001")
                        .with_header("stream-cursor", "5")
                        .with_header("stream-up-to-date", "true")
                } else {
                    at("0001").with_header("stream-up-to-date", "true")
                }
            })
            .await;
            let stream = client().stream(server.url("/s")).unwrap();
            let started = Instant::now();
            let mut chunks = stream
                .read()
                .offset(Offset::parse("0001").unwrap())
                .live(LiveMode::LongPoll)
                .max_no_progress(5)
                .bytes();
            let mut err = None;
            while let Some(item) = chunks.next().await {
                if let Err(e) = item {
                    err = Some(e);
                }
            }
            let err = err.expect("NoProgress");
            assert_eq!(err.kind(), &ErrorKind::NoProgress { attempts: 5 });
            let polls: Vec<String> = server
                .requests()
                .into_iter()
                .filter(|r| r.target.contains("live=long-poll"))
                .map(|r| r.target)
                .collect();
            assert_eq!(polls.len(), 5, "{polls:?}");
            assert!(!polls[0].contains("_nc="));
            assert!(polls[1..].iter().all(|p| p.contains("_nc=")), "{polls:?}");
            assert!(started.elapsed() >= Duration::from_millis(40), "backed off");
        }

        #[tokio::test]
        async fn stripped_headers_end_the_read_with_a_typed_error() {
            // A catch-up answer without Stream-Next-Offset.
            let server = ScriptedServer::start(|_, _| {
                Reply::status(200)
                    .with_header("content-type", "text/plain")
                    .with_body(b"data")
            })
            .await;
            let stream = client().stream(server.url("/s")).unwrap();
            let e = stream.read().collect_bytes().await.unwrap_err();
            assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Header));
            assert!(e.to_string().contains("Stream-Next-Offset"), "{e}");
            // A long-poll 204 without Stream-Cursor on an open stream.
            let server = ScriptedServer::start(|req, _| {
                if req.target.contains("live=long-poll") {
                    Reply::status(204)
                        .with_header("stream-next-offset", "0001")
                        .with_header("stream-up-to-date", "true")
                } else {
                    at("0001").with_header("stream-up-to-date", "true")
                }
            })
            .await;
            let stream = client().stream(server.url("/s")).unwrap();
            let mut chunks = stream.read().live(LiveMode::LongPoll).bytes();
            let first = chunks.next().await.unwrap().unwrap();
            assert!(first.up_to_date);
            let e = chunks.next().await.unwrap().unwrap_err();
            assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Header));
            assert!(e.to_string().contains("Stream-Cursor"), "{e}");
            assert!(chunks.next().await.is_none(), "the read ended");
        }

        #[tokio::test]
        async fn sse_connections_are_renewed_at_their_maximum_age_despite_keepalives() {
            let server = ScriptedServer::start(|_, _| {
                let mut parts = vec![(
                    Duration::ZERO,
                    b"event: control\ndata: {\"streamNextOffset\":\"0001\",\"streamCursor\":\"1\",\"upToDate\":true}\n\n"
                        .to_vec(),
                )];
                // Comments keep the connection alive for 10 s.
                parts.extend((0..200).map(|_| (Duration::from_millis(50), b": keepalive\n\n".to_vec())));
                Reply::Stream {
                    status: 200,
                    headers: vec![("content-type".into(), "text/event-stream".into())],
                    parts,
                }
            })
            .await;
            let stream = client().stream(server.url("/s")).unwrap();
            let mut chunks = stream
                .read()
                .offset(Offset::parse("0001").unwrap())
                .live(LiveMode::Sse)
                .sse_max_age(Duration::from_millis(1200))
                .bytes();
            let first = chunks.next().await.unwrap().unwrap();
            assert!(first.up_to_date);
            let _ = tokio::time::timeout(Duration::from_millis(3000), chunks.next()).await;
            let n = server.count();
            // Renewed about every 1.2 s, never in a hot loop.
            assert!((2..=4).contains(&n), "{n} connections in 3 s");
            let targets: Vec<String> = server.requests().into_iter().map(|r| r.target).collect();
            assert!(
                targets.iter().all(|t| t.contains("offset=0001")),
                "{targets:?}"
            );
            assert!(
                targets.iter().all(|t| !t.contains("_nc=")),
                "healthy: {targets:?}"
            );
        }

        #[tokio::test]
        async fn a_backwards_offset_delivers_nothing() {
            let server = ScriptedServer::start(|_, _| at("0000").with_body(b"stale")).await;
            let stream = client().stream(server.url("/s")).unwrap();
            let mut chunks = stream.read().offset(Offset::parse("0001").unwrap()).bytes();
            let e = chunks.next().await.unwrap().unwrap_err();
            assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Offset));
            assert!(e.to_string().contains("0000") && e.to_string().contains("0001"));
            assert!(chunks.next().await.is_none());
        }

        #[tokio::test]
        async fn a_message_that_is_an_empty_array_is_delivered_from_a_streamed_body() {
            let server = ScriptedServer::start(|_, _| Reply::Stream {
                status: 200,
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("stream-next-offset".into(), "0002".into()),
                    ("stream-up-to-date".into(), "true".into()),
                ],
                parts: vec![
                    (Duration::ZERO, b"[[".to_vec()),
                    (Duration::from_millis(5), b"],{}]".to_vec()),
                ],
            })
            .await;
            let stream = client().stream(server.url("/s")).unwrap();
            let mut batches = stream
                .read()
                .offset(Offset::parse("0001").unwrap())
                .json::<serde_json::Value>();
            let batch = batches.next().await.unwrap().unwrap();
            assert_eq!(
                batch.items,
                vec![serde_json::json!([]), serde_json::json!({})]
            );
            assert!(batch.exact);
            assert_eq!(batch.offset.as_str(), "0002");
        }
    }

    #[test]
    fn read_options_have_sensible_defaults() {
        let o = ReadOptions::default();
        assert_eq!(o.max_no_progress, 10);
        assert_eq!(o.sse_max_age, Duration::from_secs(600));
        assert!(o.ride_out_outages);
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
