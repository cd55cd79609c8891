//! [`Producer`]: the handle applications append through, and how appends
//! reach the open batch under the buffer budget.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::batch::{Framing, OutcomeReceiver, SealedBatch};
use super::driver::ProducerControl;
use super::feed::{FeedFuture, Json, Message, PushedNow};
use super::{Ack, ProducerBuilder, ProducerShared, ProducerState, ProducerStats};
use crate::error::{Error, ErrorKind, Result};
#[cfg(doc)]
use crate::producer::Receipt;
use crate::stream::{CloseResult, Stream};

/// An idempotent producer for one stream. `Send + Sync`: share it behind an
/// `Arc` to append from many tasks. See the [module docs](crate::producer).
pub struct Producer {
    pub(super) shared: Arc<ProducerShared>,
    pub(super) control: mpsc::Sender<ProducerControl>,
    pub(super) cancel: CancellationToken,
    pub(super) task: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("stream", &self.shared.stream.url().path())
            .field("producer_id", &self.shared.producer_id)
            .field("epoch", &self.epoch())
            .field("next_seq", &self.next_seq())
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// Configure a producer writing to `stream` as `producer_id`.
    pub fn builder(stream: &Stream, producer_id: impl Into<String>) -> ProducerBuilder {
        ProducerBuilder::new(stream, producer_id.into())
    }

    /// The producer id.
    pub fn producer_id(&self) -> &str {
        &self.shared.producer_id
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch.load(Ordering::Relaxed)
    }

    /// The sequence number the next request of this epoch will carry.
    pub fn next_seq(&self) -> u64 {
        self.shared.next_seq.load(Ordering::Relaxed)
    }

    /// Appended payload bytes not yet acknowledged (or failed), including
    /// those buffered in [`writers`](Self::writer) and the room a writer
    /// reserved ahead (at most 1/16 of `max_buffered_bytes` each).
    pub fn buffered_bytes(&self) -> usize {
        self.shared.unacknowledged_bytes()
    }

    /// Counters of recoveries so far: epochs claimed, lost server state,
    /// collisions, and batches that may have been stored twice.
    pub fn stats(&self) -> ProducerStats {
        *self.shared.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Messages that may have been stored twice: they were re-sent in a new
    /// epoch after an attempt with an unknown outcome (see
    /// [`ProducerBuilder::recover_lost_state`]). Zero unless the producer
    /// changed epochs with such batches outstanding.
    pub fn possible_duplicates(&self) -> u64 {
        self.stats().possible_duplicate_messages
    }

    /// Append one message without waiting. For JSON streams `data` must be
    /// exactly one JSON value (it becomes one message). Errors:
    /// [`ErrorKind::BufferFull`] when `max_buffered_bytes` has no room,
    /// `InvalidArgument` for an empty or malformed message, or the error
    /// that failed the current epoch.
    pub fn append(&self, data: impl Into<Bytes>) -> Result<()> {
        self.append_message(Message::Owned(data.into()))
    }

    /// [`append`](Self::append) from a borrowed slice: the bytes are copied
    /// straight into the batch, so a caller that writes its messages into
    /// one reused buffer allocates nothing per message.
    pub fn append_slice(&self, data: &[u8]) -> Result<()> {
        self.append_message(Message::Borrowed(data))
    }

    fn append_message(&self, data: Message<'_>) -> Result<()> {
        self.check_message(data.as_slice())?;
        let mut state = self.shared.lock();
        self.check_open(&state)?;
        if !self
            .shared
            .budget
            .take_shared(&mut state.credit, data.len())
        {
            return Err(self.buffer_full());
        }
        self.push(&mut state, data, false);
        Ok(())
    }

    /// Serialize `value` and append it as one message without waiting.
    /// The value is encoded straight into the batch (no per-message buffer).
    pub fn append_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let mut state = self.shared.lock();
        self.check_open(&state)?;
        match self.push_json(&mut state, value, false)? {
            Ok(_) => Ok(()),
            Err(_) => Err(self.buffer_full()),
        }
    }

    fn buffer_full(&self) -> Error {
        Error::new(ErrorKind::BufferFull)
            .with_message(format!(
                "{} bytes appended and not yet acknowledged (max_buffered_bytes {})",
                self.shared.unacknowledged_bytes(),
                self.shared.max_buffered_bytes
            ))
            .with_url(self.shared.stream.url())
    }

    /// Encode `value` into the open batch. The inner `Err` means there was
    /// no buffer room right now (nothing was kept).
    fn push_json<T: Serialize + ?Sized>(
        &self,
        state: &mut ProducerState,
        value: &T,
        want_outcome: bool,
    ) -> Result<std::result::Result<Option<OutcomeReceiver>, ()>> {
        let written = state
            .open
            .write(|body| crate::json_encode::write(body, value))
            .map_err(|e| self.encode_error(e))?;
        if written.len > self.shared.max_buffered_bytes {
            state.open.rollback(written);
            return Err(too_large(written.len).with_url(self.shared.stream.url()));
        }
        if !self
            .shared
            .budget
            .take_shared(&mut state.credit, written.len)
        {
            state.open.rollback(written);
            return Ok(Err(()));
        }
        let first = state.open.is_empty();
        let ProducerState {
            open, next_ordinal, ..
        } = state;
        let (full, rx) = open.commit(written, self.shared.limits, want_outcome, || {
            let ordinal = *next_ordinal;
            *next_ordinal += 1;
            ordinal
        });
        let wake = first || full.is_some();
        if let Some(batch) = full {
            self.shared.hand_off(batch);
        }
        self.after_push(state, wake);
        Ok(Ok(rx))
    }

    /// Append one message, waiting for buffer room (backpressure). The
    /// returned [`Ack`] resolves to the message's [`Receipt`] once the
    /// server acknowledged its batch.
    #[inline]
    pub fn send(&self, data: impl Into<Bytes>) -> impl Future<Output = Result<Ack>> + Send + '_ {
        FeedFuture::new(self, Message::Owned(data.into()))
    }

    /// [`send`](Self::send) from a borrowed slice: the bytes are copied
    /// straight into the batch, so a caller that writes its messages into
    /// one reused buffer allocates and frees nothing per message.
    #[inline]
    pub fn send_slice<'a>(
        &'a self,
        data: &'a [u8],
    ) -> impl Future<Output = Result<Ack>> + Send + 'a {
        FeedFuture::new(self, Message::Borrowed(data))
    }

    /// Append one message, waiting for buffer room like [`send`](Self::send),
    /// without an acknowledgement of its own: the cheapest way to stream
    /// with backpressure. A failure is reported by the next
    /// [`flush`](Self::flush) or [`close`](Self::close), to
    /// [`ProducerBuilder::on_error`], and by the appends after it (the epoch
    /// fails); nothing is dropped silently.
    #[inline]
    pub fn feed(&self, data: impl Into<Bytes>) -> impl Future<Output = Result<()>> + Send + '_ {
        FeedFuture::new(self, Message::Owned(data.into()))
    }

    /// [`feed`](Self::feed) from a borrowed slice, copied straight into the
    /// batch (no allocation per message).
    #[inline]
    pub fn feed_slice<'a>(
        &'a self,
        data: &'a [u8],
    ) -> impl Future<Output = Result<()>> + Send + 'a {
        FeedFuture::new(self, Message::Borrowed(data))
    }

    /// Wait for `data.len()` bytes of buffer room, then append `data` (a
    /// checked message).
    pub(super) async fn push_after_room(
        &self,
        data: Message<'_>,
        want_outcome: bool,
    ) -> Result<Option<OutcomeReceiver>> {
        let mut state = self.lock_after_room(data.len()).await?;
        Ok(self.push(&mut state, data, want_outcome))
    }

    /// Append `data` now if the buffer budget has room for it; `Err(data)`
    /// back when it has not (nothing taken).
    #[inline]
    pub(super) fn try_push_now<'d>(
        &self,
        data: Message<'d>,
        want_outcome: bool,
    ) -> Result<PushedNow<Message<'d>>> {
        let mut state = self.shared.lock();
        self.check_open(&state)?;
        if !self.take_room(&mut state, data.len()) {
            return Ok(Err(data));
        }
        Ok(Ok(self.push(&mut state, data, want_outcome)))
    }

    /// Lock the state with `len` bytes of buffer budget taken, waiting for
    /// room when there is none (backpressure).
    async fn lock_with_room(&self, len: usize) -> Result<MutexGuard<'_, ProducerState>> {
        {
            let mut state = self.shared.lock();
            self.check_open(&state)?;
            if self.take_room(&mut state, len) {
                return Ok(state);
            }
        }
        self.lock_after_room(len).await
    }

    /// Take `len` bytes of buffer budget if there is room now; when there
    /// is not, the state's idle credit goes back (a wait must not need it).
    #[inline]
    fn take_room(&self, state: &mut ProducerState, len: usize) -> bool {
        let budget = &self.shared.budget;
        if budget.take_shared(&mut state.credit, len) {
            return true;
        }
        budget.return_shared(&mut state.credit);
        false
    }

    /// Wait for `len` bytes of buffer budget, then lock the state.
    async fn lock_after_room(&self, len: usize) -> Result<MutexGuard<'_, ProducerState>> {
        self.shared.budget.acquire(len, &self.shared.done).await?;
        let state = self.shared.lock();
        if let Err(e) = self.check_open(&state) {
            self.shared.budget.release(len);
            return Err(e);
        }
        Ok(state)
    }

    /// Append every message of `messages` in order, waiting for buffer room
    /// when needed (backpressure) like [`send`](Self::send), but taking the
    /// lock and the buffer budget once per run of messages rather than once
    /// per message. The [`Ack`] resolves once the last message is stored;
    /// a producer's batches are applied in order, so every earlier one is
    /// stored too. An invalid message stops the call with its error; the
    /// messages before it are appended.
    pub async fn send_many<I>(&self, messages: I) -> Result<Ack>
    where
        I: IntoIterator,
        I::Item: Into<Bytes>,
    {
        let mut iter = messages.into_iter().map(Into::into).peekable();
        let mut run: Vec<Bytes> = Vec::new();
        let mut last = None;
        while iter.peek().is_some() {
            // A run of valid messages, up to the first invalid one.
            let mut total = 0usize;
            let mut invalid = None;
            while run.len() < MESSAGES_PER_LOCK {
                let Some(data) = iter.next() else { break };
                if let Err(e) = self.check_message(&data) {
                    invalid = Some(e);
                    break;
                }
                // Saturating: a run too large for the budget takes the slow path.
                total = total.saturating_add(data.len());
                run.push(data);
            }
            let ends = invalid.is_none() && iter.peek().is_none();
            let count = run.len();
            // Cooperative, like `send` (once per run).
            tokio::task::consume_budget().await;
            let appended = {
                let mut state = self.shared.lock();
                self.check_open(&state)?;
                let fits = self.shared.budget.take_shared(&mut state.credit, total);
                if fits {
                    // The whole run's bytes at once, and one hold of the lock.
                    for (i, data) in run.drain(..).enumerate() {
                        let is_last = ends && i + 1 == count;
                        if let Some(rx) = self.push(&mut state, Message::Owned(data), is_last) {
                            last = Some(Ack { rx });
                        }
                    }
                }
                fits
            };
            if !appended {
                // No room for the run: message by message, waiting for
                // room like `send`.
                for (i, data) in run.drain(..).enumerate() {
                    let ack = self.send(data).await?;
                    if ends && i + 1 == count {
                        last = Some(ack);
                    }
                }
            }
            if let Some(e) = invalid {
                return Err(e);
            }
        }
        last.ok_or_else(|| Error::invalid_argument("messages", "no messages to send"))
    }

    /// Serialize `value` and [`send`](Self::send) it. Encodes straight into
    /// the batch when there is buffer room.
    #[inline]
    pub fn send_json<'a, T: Serialize + Sync + ?Sized>(
        &'a self,
        value: &'a T,
    ) -> impl Future<Output = Result<Ack>> + Send + 'a {
        FeedFuture::new(self, Json(value))
    }

    /// Serialize `value` and [`feed`](Self::feed) it: backpressure without
    /// an acknowledgement of its own. Encodes straight into the batch when
    /// there is buffer room.
    #[inline]
    pub fn feed_json<'a, T: Serialize + Sync + ?Sized>(
        &'a self,
        value: &'a T,
    ) -> impl Future<Output = Result<()>> + Send + 'a {
        FeedFuture::new(self, Json(value))
    }

    /// Encode `value` into the open batch now if the buffer budget has
    /// room; the inner `Err` when it has not (nothing kept).
    #[inline]
    pub(super) fn try_push_json_now<T: Serialize + ?Sized>(
        &self,
        value: &T,
        want_outcome: bool,
    ) -> Result<std::result::Result<Option<OutcomeReceiver>, ()>> {
        let mut state = self.shared.lock();
        self.check_open(&state)?;
        self.push_json(&mut state, value, want_outcome)
    }

    /// Send `values` as messages of **one** request, which the server stores
    /// atomically and contiguously (a transaction; the State Protocol writer
    /// uses it). The group ignores `max_batch_bytes`/`max_batch_items` but
    /// must fit `max_buffered_bytes`; it waits for buffer room. The [`Ack`]
    /// resolves once the whole group is stored (exactly once, like every
    /// producer message).
    pub async fn send_json_group<T: Serialize + Sync>(&self, values: &[T]) -> Result<Ack> {
        if values.is_empty() {
            return Err(Error::invalid_argument(
                "values",
                "a group needs at least one message",
            ));
        }
        let encoded = values
            .iter()
            .map(|v| self.encode_json(v))
            .collect::<Result<Vec<_>>>()?;
        for message in &encoded {
            self.check_message(message)?;
        }
        let total: usize = encoded.iter().map(Bytes::len).sum();
        if total > self.shared.max_buffered_bytes {
            return Err(too_large(total).with_url(self.shared.stream.url()));
        }
        let mut state = self.lock_with_room(total).await?;
        // The group gets a batch of its own: seal what is open, push every
        // message without limit checks, seal again.
        self.shared.seal_open(&mut state);
        let last = encoded.len() - 1;
        let mut rx = None;
        for (i, message) in encoded.iter().enumerate() {
            let r = state.open.push(message, i == last);
            if i == last {
                rx = r;
            }
        }
        self.shared.seal_open(&mut state);
        self.shared.wake.notify_one();
        Ok(Ack {
            rx: rx.expect("push returns a receiver when asked"),
        })
    }

    /// Wait until every message appended before this call is acknowledged
    /// or failed. Returns the first failure since the previous flush.
    pub async fn flush(&self) -> Result<()> {
        let target = {
            let mut state = self.shared.lock();
            self.shared.seal_open(&mut state);
            state.next_ordinal
        };
        self.shared.wake.notify_one();
        self.wait_resolved(target).await?;
        match self.shared.lock().first_error.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    async fn wait_resolved(&self, target: u64) -> Result<()> {
        let mut resolved = self.shared.resolved.subscribe();
        tokio::select! {
            biased;
            r = resolved.wait_for(|r| *r >= target) => r.map(|_| ()).map_err(|_| Error::new(ErrorKind::ProducerClosed)),
            _ = self.shared.done.cancelled() => Err(Error::new(ErrorKind::ProducerClosed)),
        }
    }

    /// Flush, then close the stream through the producer: the request
    /// carries the producer headers, so repeating it (or a retry whose
    /// answer was lost) is deduplicated instead of failing. `final_message`
    /// is appended atomically with the close (for JSON streams, one JSON
    /// value). Another writer's close makes this a `StreamClosed` error.
    pub async fn close_stream(&self, final_message: Option<Bytes>) -> Result<CloseResult> {
        let final_message = final_message.unwrap_or_default();
        if !final_message.is_empty() {
            self.check_message(&final_message)?;
        }
        self.flush().await?;
        let len = final_message.len();
        let rx = {
            let mut state = self.lock_with_room(len).await?;
            self.shared.seal_open(&mut state);
            let body = if final_message.is_empty() {
                Bytes::new()
            } else {
                super::batch::frame_single(self.shared.framing, &final_message)
            };
            let ordinal = state.take_ordinal();
            let (batch, rx) = SealedBatch::whole(ordinal, body, len, true);
            self.shared.hand_off(batch);
            rx
        };
        self.shared.wake.notify_one();
        let receipt = Ack { rx }.await?;
        Ok(CloseResult {
            final_offset: receipt.offset,
        })
    }

    /// Serialize `value` and close the stream with it as the final message.
    pub fn close_stream_json<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> impl Future<Output = Result<CloseResult>> + Send + '_ {
        let encoded = self.encode_json(value);
        async move { self.close_stream(Some(encoded?)).await }
    }

    /// Flush, then move to the next epoch with seq 0. This is also how a
    /// producer recovers after a batch failed. Returns the new epoch.
    /// Failures found by the flush were reported on their receipts and to
    /// `on_error`; call [`flush`](Self::flush) first to see them.
    pub async fn restart(&self) -> Result<u64> {
        let _ = self.flush().await;
        let (tx, rx) = oneshot::channel();
        self.control
            .send(ProducerControl::Restart(tx))
            .await
            .map_err(|_| Error::new(ErrorKind::ProducerClosed))?;
        rx.await
            .map_err(|_| Error::new(ErrorKind::ProducerClosed))?
    }

    /// Flush and stop the producer's task. Later appends fail with
    /// [`ErrorKind::ProducerClosed`]. Returns the flush's result.
    pub async fn close(&self) -> Result<()> {
        let flushed = self.flush().await;
        self.shared.lock().closed = true;
        self.cancel.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        flushed
    }

    #[inline]
    pub(super) fn check_message(&self, data: &[u8]) -> Result<()> {
        self.check_size(data.len())?;
        let url = self.shared.stream.url();
        if self.shared.framing == Framing::JsonArray
            && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(data)
        {
            return Err(Error::invalid_argument(
                "data",
                format!("a message for a JSON stream must be one JSON value: {e}"),
            )
            .with_url(url));
        }
        Ok(())
    }

    /// A message's length: not empty, and within the buffer budget.
    #[inline]
    pub(super) fn check_size(&self, len: usize) -> Result<()> {
        let url = self.shared.stream.url();
        if len == 0 {
            return Err(
                Error::invalid_argument("data", "a message must not be empty").with_url(url),
            );
        }
        if len > self.shared.max_buffered_bytes || u32::try_from(len).is_err() {
            return Err(too_large(len).with_url(url));
        }
        Ok(())
    }

    pub(super) fn encode_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes> {
        let mut out = Vec::new();
        crate::json_encode::write(&mut out, value).map_err(|e| self.encode_error(e))?;
        Ok(Bytes::from(out))
    }

    pub(super) fn encode_error(&self, e: crate::json_encode::EncodeError) -> Error {
        Error::invalid_argument("value", format!("could not serialize to JSON: {e}"))
            .with_url(self.shared.stream.url())
    }

    pub(super) fn check_open(&self, state: &ProducerState) -> Result<()> {
        if state.closed {
            return Err(Error::new(ErrorKind::ProducerClosed).with_url(self.shared.stream.url()));
        }
        if let Some(error) = &state.poison {
            return Err(error.clone());
        }
        Ok(())
    }

    /// Add an encoded message whose bytes are already reserved.
    fn push(
        &self,
        state: &mut ProducerState,
        message: Message<'_>,
        want_outcome: bool,
    ) -> Option<OutcomeReceiver> {
        let limits = self.shared.limits;
        let mut wake = false;
        if state.open.would_overflow(message.len(), limits) {
            self.shared.seal_open(state);
            wake = true;
        }
        if state.open.is_empty()
            && self.shared.framing == Framing::Concat
            && message.len() >= limits.max_bytes
        {
            // A batch-sized byte message is its own body: no copy (of an
            // owned one).
            let ordinal = state.take_ordinal();
            let len = message.len();
            let (batch, rx) = SealedBatch::whole(ordinal, message.into_bytes(), len, false);
            self.shared.hand_off(batch);
            self.shared.wake.notify_one();
            return want_outcome.then_some(rx);
        }
        // The first message starts the linger clock in the task.
        wake |= state.open.is_empty();
        let rx = state.open.push(message.as_slice(), want_outcome);
        self.after_push(state, wake);
        rx
    }

    /// Send a full open batch on its way, and wake the task when a batch
    /// was sealed or a new one started lingering.
    fn after_push(&self, state: &mut ProducerState, mut wake: bool) {
        if state.open.is_full(self.shared.limits) {
            self.shared.seal_open(state);
            wake = true;
        }
        if wake {
            self.shared.wake.notify_one();
        }
    }
}

/// Messages `send_many` appends under one budget reservation and one hold
/// of the state lock.
const MESSAGES_PER_LOCK: usize = 256;

fn too_large(len: usize) -> Error {
    Error::invalid_argument(
        "data",
        format!("a {len}-byte message is larger than max_buffered_bytes"),
    )
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.cancel.cancel();
        let unacknowledged = self.shared.unacknowledged_bytes();
        let closed = self.shared.lock().closed;
        if unacknowledged > 0 && !closed {
            tracing::warn!(
                producer_id = %self.shared.producer_id,
                stream = %self.shared.stream.url().path(),
                unacknowledged_bytes = unacknowledged,
                "producer dropped with unacknowledged messages; call close() to flush"
            );
        }
    }
}
