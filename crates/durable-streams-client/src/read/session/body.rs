//! Catch-up and long-poll response bodies, read in bounded pieces: a
//! response larger than a piece is handed out in parts, a broken body is
//! requested again and the part already handed out is skipped.

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use reqwest::StatusCode;

use super::{Answer, PIECE_BYTES, Session, Step};
use crate::error::{Error, ErrorKind, Result};
use crate::json::{ArrayDecoder, ArraySplitter, frame_elements};
use crate::offset::Offset;
use crate::read::Chunk;
use crate::read::guard::{catch_up_stalled, check_forward, long_poll_stalled};
use crate::request::{RequestSpec, ResponseMeta};

/// Bytes received and not yet handed out. A response that arrives in one
/// piece (the usual small catch-up or long-poll answer) is kept as it came,
/// with no copy; a second piece starts a buffer holding both.
#[derive(Debug, Default)]
pub(crate) struct Pieces {
    one: Option<Bytes>,
    many: BytesMut,
}

impl Pieces {
    pub(crate) fn len(&self) -> usize {
        self.one.as_ref().map_or(self.many.len(), Bytes::len)
    }

    pub(crate) fn push(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        if self.one.is_none() && self.many.is_empty() {
            self.one = Some(piece);
            return;
        }
        if let Some(first) = self.one.take() {
            self.many.reserve(first.len() + piece.len());
            self.many.extend_from_slice(&first);
        }
        self.many.extend_from_slice(&piece);
    }

    /// The first `n` bytes (all of them if fewer).
    pub(crate) fn split_to(&mut self, n: usize) -> Bytes {
        match &mut self.one {
            Some(one) if n >= one.len() => self.one.take().unwrap_or_default(),
            Some(one) => one.split_to(n),
            None => self.many.split_to(n.min(self.many.len())).freeze(),
        }
    }

    pub(crate) fn take_all(&mut self) -> Bytes {
        self.split_to(usize::MAX)
    }

    /// All the bytes, in one slice.
    fn as_slice(&self) -> &[u8] {
        self.one.as_deref().unwrap_or(&self.many)
    }

    /// Drop the first `n` bytes (all of them if fewer).
    fn consume(&mut self, n: usize) {
        match &mut self.one {
            Some(one) if n >= one.len() => self.one = None,
            Some(one) => one.advance(n),
            None => self.many.advance(n.min(self.many.len())),
        }
    }

    fn clear(&mut self) {
        self.one = None;
        self.many.clear();
    }
}

/// The last piece of a response: its data (or, for typed reads, the bytes
/// its decoded messages came from) and how many units it holds.
struct Payload {
    data: Bytes,
    messages: Option<Vec<Bytes>>,
    typed_bytes: Option<usize>,
    units: u64,
}

/// A catch-up or long-poll response being read in bounded pieces.
pub(super) struct ResponseBody {
    body: crate::http::BodyStream,
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
    /// JSON streams: the array is split into messages as it arrives, once
    /// it is larger than a piece (see `lazy`).
    splitter: Option<ArraySplitter>,
    /// JSON streams: the body is held whole in `pending_bytes`, unsplit.
    /// A response that fits one piece is handed out as the server's own
    /// array, and typed reads decode it in one pass (no split, no copy);
    /// splitting starts only when a piece has to be cut from a larger one.
    lazy: bool,
    /// Typed JSON reads: the body is decoded by the session's decoder
    /// straight from `pending_bytes` (no splitter).
    typed: bool,
    /// Typed: the next element is larger than what is held; wait for this
    /// many bytes before decoding again (so a huge element is not decoded
    /// over and over as it arrives).
    retry_at: usize,
    pending_bytes: Pieces,
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
            let data = self.pending_bytes.split_to(limit);
            self.pending_len -= data.len();
            let n = data.len() as u64;
            (data, n, None)
        }
    }

    /// Take a received piece, dropping units already handed out before a
    /// re-request (data at an offset never changes, so the prefix is the same).
    fn accept(&mut self, mut piece: Bytes) -> Result<()> {
        match &mut self.splitter {
            Some(_) if self.lazy || self.typed => {
                self.received += piece.len() as u64;
                self.pending_len += piece.len();
                self.pending_bytes.push(piece);
            }
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
                self.pending_bytes.push(piece);
            }
        }
        Ok(())
    }

    /// Stop holding a JSON body whole: split what arrived so far (a piece
    /// is to be cut from it, or pieces were handed out before a re-request
    /// and the messages must be counted to skip them).
    fn start_splitting(&mut self) -> Result<()> {
        if !self.lazy {
            return Ok(());
        }
        self.lazy = false;
        let held = self.pending_bytes.take_all();
        self.pending_len = 0;
        self.received = 0;
        self.accept(held)
    }

    /// Stop holding a JSON body whole: decode it with the session's typed
    /// decoder from here on, dropping the first `skip` messages.
    fn start_decoding(&mut self, decoder: &mut dyn ArrayDecoder, skip: u64) {
        self.lazy = false;
        self.typed = true;
        self.retry_at = 0;
        decoder.start(skip);
    }

    /// Typed: decode the messages held, up to about `target` bytes of them.
    /// Returns the bytes consumed and the messages kept.
    fn decode_pending(
        &mut self,
        decoder: &mut dyn ArrayDecoder,
        target: usize,
        limit: usize,
    ) -> Result<(usize, u64)> {
        let before = decoder.pending();
        let consumed = decoder.read(self.pending_bytes.as_slice(), target, self.ended)?;
        self.pending_bytes.consume(consumed);
        self.pending_len -= consumed;
        self.retry_at = if consumed == 0 {
            self.pending_len
                .saturating_mul(2)
                .min(limit.saturating_add(1))
        } else {
            0
        };
        Ok((consumed, (decoder.pending() - before) as u64))
    }

    /// The end of a JSON body held whole: `(data, 1)` when it holds
    /// messages, `(empty, 0)` for `[]` or an empty body. Only the array's
    /// brackets are checked here; the elements are checked when decoded.
    fn take_whole_array(&mut self) -> Result<(Bytes, u64)> {
        let data = self.pending_bytes.take_all();
        self.pending_len = 0;
        let trimmed = data.trim_ascii();
        if trimmed.is_empty() {
            return Ok((Bytes::new(), 0));
        }
        let inner = match (trimmed.first(), trimmed.last()) {
            (Some(b'['), Some(b']')) if trimmed.len() >= 2 => &trimmed[1..trimmed.len() - 1],
            (Some(b'['), _) => {
                return Err(ArraySplitter::malformed("the body ended inside the array"));
            }
            _ => return Err(ArraySplitter::malformed("the body does not start with `[`")),
        };
        Ok(if inner.trim_ascii().is_empty() {
            (Bytes::new(), 0)
        } else {
            (data, 1)
        })
    }
}

impl Session {
    pub(super) fn open_body(
        &mut self,
        spec: RequestSpec,
        resp: crate::http::Response,
        long_poll: bool,
        elapsed: Duration,
    ) -> Result<()> {
        let (meta, next) = self.response_meta(&resp, long_poll)?;
        // The next offset arrives with the headers: a backwards one fails
        // before any of the body is delivered.
        check_forward(&self.offset, &next, false)?;
        if !long_poll {
            self.stream.learn_content_type(meta.content_type());
        }
        let limit = self.stream.client().max_response_bytes();
        self.body = Some(Box::new(ResponseBody {
            status: resp.status(),
            body: resp.into_body(),
            spec,
            long_poll,
            meta,
            next,
            elapsed,
            sent_cursor: self.cursor.clone(),
            splitter: self.json.then(|| ArraySplitter::new(limit)),
            lazy: self.json,
            typed: false,
            retry_at: 0,
            pending_bytes: Pieces::default(),
            pending_items: Vec::new(),
            pending_len: 0,
            delivered: 0,
            ended: false,
            received: 0,
        }));
        Ok(())
    }

    /// Read the open response: a piece of at most [`PIECE_BYTES`] (its
    /// offset is where the response started, since the server gives no
    /// position inside a response: not an exact resume position), or at its
    /// end the final piece with the response's offsets. A broken body is
    /// requested again and the part already handed out is skipped.
    pub(super) async fn body_step(&mut self) -> Result<Step> {
        let limit = self.stream.client().max_response_bytes();
        let piece_limit = PIECE_BYTES.min(limit);
        loop {
            let Some(body) = self.body.as_mut() else {
                return Ok(Step::Continue);
            };
            // A full piece, or more than one piece left at the end: hand out
            // a piece. Its offset is where the response started.
            if body.pending_len >= piece_limit.max(body.retry_at)
                && !(body.ended && body.pending_len == piece_limit)
            {
                if body.lazy {
                    match self.decoder.as_deref_mut() {
                        Some(decoder) => body.start_decoding(decoder, 0),
                        None => body.start_splitting()?,
                    }
                    continue;
                }
                // Data is delivered only when the offset moves forward.
                check_forward(&self.offset, &body.next, true)?;
                let (data, units, messages, typed_bytes) = match self.decoder.as_deref_mut() {
                    Some(decoder) if body.typed => {
                        let (bytes, units) = body.decode_pending(decoder, piece_limit, limit)?;
                        if units == 0 {
                            // An element not all here yet, or only
                            // messages handed out before a re-request.
                            continue;
                        }
                        (Bytes::new(), units, None, Some(bytes))
                    }
                    _ => {
                        let (data, units, messages) = body.take_pending(piece_limit);
                        (data, units, messages, None)
                    }
                };
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
                    typed_bytes,
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
                let (data, units, messages, typed_bytes) = match self.decoder.as_deref_mut() {
                    _ if body.lazy => {
                        let (data, units) = body
                            .take_whole_array()
                            .map_err(|e| e.with_url(self.stream.url()))?;
                        (data, units, None, None)
                    }
                    Some(decoder) if body.typed => {
                        let (bytes, units) = body.decode_pending(decoder, usize::MAX, limit)?;
                        (Bytes::new(), units, None, Some(bytes))
                    }
                    _ => {
                        let (data, units, messages) = body.take_pending(usize::MAX);
                        (data, units, messages, None)
                    }
                };
                let payload = Payload {
                    data,
                    messages,
                    typed_bytes,
                    units,
                };
                let (step, stalled) = self.finish_response(*body, payload, handed_out)?;
                if let Some(what) = stalled {
                    self.stall(what).await?;
                }
                return Ok(step);
            }
            match body.body.next().await {
                Some(Ok(piece)) => body.accept(piece)?,
                // Boxed: rare, and inline it would enlarge every request
                // waiting for its answer.
                Some(Err(err)) => Box::pin(self.retry_body(err)).await?,
                None => body.ended = true,
            }
        }
    }

    /// Re-request a response whose body broke, drawing on the read's backoff.
    async fn retry_body(&mut self, err: crate::http::HttpError) -> Result<()> {
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
            .with_source(err.into_source())
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
            body.body = resp.into_body();
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
                // Messages already handed out are counted to be skipped.
                body.lazy = body.delivered == 0;
                body.typed = false;
                if let Some(decoder) = self.decoder.as_deref_mut().filter(|_| !body.lazy) {
                    body.start_decoding(decoder, body.delivered);
                }
            }
        }
        Ok(())
    }

    /// A response was read to its end: record its position, judge whether
    /// it moved the read forward and yield what is worth yielding, after a
    /// stall (a backoff) when it did not: `Some(what)` stalled. Whether it
    /// carried messages is decided by their count, never by looking at the
    /// bytes (`[]` is a message). Not async, so that the response it takes
    /// by value is not held in the future of every waiting request.
    fn finish_response(
        &mut self,
        body: ResponseBody,
        payload: Payload,
        handed_out: u64,
    ) -> Result<(Step, Option<&'static str>)> {
        let Payload {
            data,
            messages,
            typed_bytes,
            units,
        } = payload;
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
                typed_bytes,
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
                return Ok((step, Some("long-poll answers")));
            }
            self.progressed();
            return Ok((step, None));
        }
        if !any_data && !meta.closed {
            self.stream.remember_tail_etag(
                meta.etag()
                    .filter(|_| next == self.offset)
                    .map(|e| (next.clone(), e.to_owned())),
            );
        }
        let (step, moved) = self.advance(Answer {
            data,
            messages,
            typed_bytes,
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
            return Ok((step, Some("catch-up answers")));
        }
        self.progressed();
        Ok((step, None))
    }
}

#[cfg(test)]
mod pieces_tests {
    use super::Pieces;
    use bytes::Bytes;

    #[test]
    fn one_piece_is_kept_and_more_are_joined() {
        let mut p = Pieces::default();
        let first = Bytes::from_static(b"hello");
        p.push(first.clone());
        p.push(Bytes::new());
        assert_eq!(p.len(), 5);
        let part = p.split_to(2);
        assert_eq!(&part[..], b"he");
        // No copy: the slice points into the piece as it came.
        assert_eq!(part.as_ptr(), first.as_ptr());
        p.push(Bytes::from_static(b" world"));
        assert_eq!(p.len(), 9);
        assert_eq!(&p.split_to(4)[..], b"llo ");
        assert_eq!(&p.take_all()[..], b"world");
        assert_eq!(p.len(), 0);
        assert!(p.take_all().is_empty());
        p.push(Bytes::from_static(b"again"));
        assert_eq!(&p.split_to(100)[..], b"again");
        p.push(Bytes::from_static(b"x"));
        p.clear();
        assert_eq!(p.len(), 0);
    }
}
