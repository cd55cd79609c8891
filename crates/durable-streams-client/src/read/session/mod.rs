//! One state machine over catch-up, long-poll and SSE that yields [`Chunk`]s
//! and always resumes from the last delivered offset.
//!
//! The [`Session`] and its catch-up and long-poll requests live here; the
//! reading of their response bodies in bounded pieces in [`body`], the SSE
//! phase (connections, data and control events) in [`sse_phase`].

mod body;
mod sse_phase;
#[cfg(test)]
mod tests;

pub(crate) use self::body::Pieces;
use self::body::ResponseBody;
use self::sse_phase::SseConnection;
pub(crate) use self::sse_phase::fuzz_entry_control;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream as FuturesStream;
use reqwest::{Method, StatusCode};
use tokio::time::Sleep;

use super::guard::{
    CLOCK_CHECK, ClockWatch, DEFAULT_MAX_NO_PROGRESS, DEFAULT_SSE_MAX_AGE, ProgressGuard,
    check_forward,
};
use super::{Chunk, LiveMode};
use crate::error::{DecodeKind, Error, Result};
use crate::json::ArrayDecoder;
use crate::offset::Offset;
use crate::request::{RequestSpec, ResponseMeta, error_from_response, read_body_limited};
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

/// What one step of the machine produced.
enum Step {
    Yield(Chunk),
    Continue,
}

/// One answer's position and payload, as [`Session::advance`] records it.
struct Answer {
    data: Bytes,
    messages: Option<Vec<Bytes>>,
    /// The messages wait in the session's decoder (see `Chunk::typed_bytes`).
    typed_bytes: Option<usize>,
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
/// paused meanwhile (the connection may be dead: reconnect). The clocks
/// are compared whenever `tick` fires, at least every [`CLOCK_CHECK`].
/// `tick` may outlive the call (a long-poll session keeps one for all its
/// requests: no timer set up and torn down per request, and none torn
/// down between an answer and its delivery); one left from an earlier
/// wait only brings a check forward.
async fn watched<F: Future>(
    clock: &mut ClockWatch,
    tick: &mut Option<Pin<Box<Sleep>>>,
    fut: F,
) -> Option<F::Output> {
    *clock = ClockWatch::new();
    let tick = tick.get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOCK_CHECK)));
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Some(out),
            () = tick.as_mut() => {
                tick.as_mut().reset(tokio::time::Instant::now() + CLOCK_CHECK);
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
    /// Boxed: a live SSE session never holds one, and its size would
    /// otherwise sit in every subscriber.
    body: Option<Box<ResponseBody>>,
    /// Typed JSON reads: decodes responses larger than a piece while they
    /// arrive (see `Chunk::typed_bytes`).
    decoder: Option<Box<dyn ArrayDecoder>>,
    /// One retry budget for the whole read: request retries, body
    /// re-requests, reconnects and no-progress waits. Unbounded for live
    /// modes (reset on progress), the policy's budget for `LiveMode::Off`.
    backoff: Backoff,
    guard: ProgressGuard,
    /// Short SSE connections in a row (auto mode falls back after a few).
    short_sse: u32,
    sse_max_age: Duration,
    clock: ClockWatch,
    /// The clock check of long-poll requests, kept across them (see
    /// [`watched`]). SSE connections have a timer of their own.
    long_poll_tick: Option<Pin<Box<Sleep>>>,
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
            decoder: None,
            backoff,
            guard: ProgressGuard::new(options.max_no_progress),
            short_sse: 0,
            sse_max_age: options
                .sse_max_age
                .clamp(Duration::from_millis(1), MAX_SSE_AGE),
            clock: ClockWatch::new(),
            long_poll_tick: None,
            stream,
        }
    }

    pub(crate) fn into_stream(self) -> impl FuturesStream<Item = Result<Chunk>> + Send + 'static {
        // The session boxed: `Unfold` keeps room for its state next to the
        // future that holds it, so an inline session would count twice.
        futures::stream::unfold(Box::new(self), |mut session| async move {
            let item = session.next_chunk().await?;
            Some((item, session))
        })
    }

    /// Decode large JSON responses with `decoder` while they arrive: a
    /// chunk with `typed_bytes` leaves its items there to be taken.
    pub(crate) fn decode_with(&mut self, decoder: Box<dyn ArrayDecoder>) {
        self.decoder = Some(decoder);
    }

    /// The next chunk, `None` at the end. An error ends the session.
    pub(crate) async fn next_chunk(&mut self) -> Option<Result<Chunk>> {
        while !self.done {
            let step = match self.phase {
                // The request futures of catch-up and long-poll are large
                // (the whole reqwest send) and short-lived: boxed, they do
                // not enlarge the future of every idle SSE subscriber.
                Phase::CatchUp => Box::pin(self.catch_up_step()).await,
                Phase::LongPoll => Box::pin(self.long_poll_step()).await,
                Phase::Sse => self.sse_step().await,
            };
            match step {
                Ok(Step::Yield(chunk)) => {
                    let bytes = chunk.typed_bytes.unwrap_or(chunk.data.len());
                    crate::telemetry::chunk_delivered(self.phase.name(), bytes);
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
                typed_bytes: a.typed_bytes.filter(|_| a.has_data),
            }),
            moved,
        ))
    }

    fn read_spec(&self, operation: &'static str) -> RequestSpec {
        let mut spec =
            RequestSpec::new(Method::GET, operation).query("offset", self.offset.clone());
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
            spec = spec.header(reqwest::header::IF_NONE_MATCH, etag)?;
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
                typed_bytes: None,
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
            &mut self.long_poll_tick,
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
        resp: crate::http::Response,
    ) -> futures::future::BoxFuture<'static, Error> {
        // Owned captures only: `&self` is not `Sync`, so it must not live
        // across the await. Boxed: an error path, and inline its size would
        // sit in every waiting long-poll and catch-up request.
        let url = self.stream.url().clone();
        let spec = spec.clone();
        Box::pin(async move {
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = read_body_limited(resp, 4096).await.unwrap_or_default();
            error_from_response(&spec, status, &headers, &body).with_url(&url)
        })
    }

    /// The response's protocol headers, checked: `(meta, next offset)`.
    fn response_meta(
        &self,
        resp: &crate::http::Response,
        long_poll: bool,
    ) -> Result<(ResponseMeta, Offset)> {
        let status = resp.status().as_u16();
        let meta = ResponseMeta::from_headers(resp.headers())
            .map_err(|e| e.with_url(self.stream.url()).with_status(status))?;
        let next = check_read_headers(&meta, long_poll)
            .map_err(|e| e.with_url(self.stream.url()).with_status(status))?;
        Ok((meta, next))
    }
}
