//! [`ProducerWriter`]: a buffered writer over a [`Producer`] for one task
//! streaming many small messages: it fills a batch of its own, with no lock
//! and no atomic operation per message, and hands whole batches over.

use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::batch::OpenBatch;
use super::budget::Credit;
use super::{FailedBatch, Producer};
use crate::error::Result;

/// A buffered writer over a [`Producer`], made by [`Producer::writer`]:
/// the fastest way for one task to stream many small messages.
///
/// Messages are copied into a batch the writer owns, with no lock and no
/// atomic operation per message; buffer budget is reserved a chunk at a
/// time. The writer hands its batch to the producer when the batch is full
/// (`max_batch_bytes` / `max_batch_items`), on [`submit`](Self::submit) and
/// [`flush`](Self::flush), when it has to wait for buffer room, and when it
/// is dropped. Like [`std::io::BufWriter`]: messages written through one
/// writer keep their order, and take their place among the producer's other
/// appends when they are handed over, not when written. The producer's
/// `linger` does not apply to a writer's batch; call `submit` or `flush`
/// when a pause in writing should not hold messages back.
///
/// Exactly once, like every producer message. A failure is reported by
/// `submit`, `flush`, the producer's [`flush`](Producer::flush) and
/// [`ProducerBuilder::on_error`](super::ProducerBuilder::on_error). A
/// writer dropped with messages the producer no longer accepts (it was
/// closed, or its epoch failed) hands them to `on_error` and logs a
/// warning: they are never dropped silently.
///
/// ```no_run
/// # async fn demo(producer: &durable_streams_client::Producer) -> durable_streams_client::Result<()> {
/// let mut writer = producer.writer();
/// let mut line = Vec::new();
/// for i in 0..1_000_000u64 {
///     line.clear();
///     line.extend_from_slice(format!("reading {i}\n").as_bytes());
///     writer.write(&line).await?;
/// }
/// writer.flush().await?; // handed over and acknowledged
/// # Ok(()) }
/// ```
pub struct ProducerWriter<'a> {
    producer: &'a Producer,
    open: OpenBatch,
    /// Budget reserved ahead for this writer's next messages.
    credit: Credit,
    /// Bytes of buffer budget the messages in `open` hold.
    held: usize,
    /// Reused for encoding JSON values.
    scratch: Vec<u8>,
    /// Writes since one last spent a unit of tokio's cooperative budget.
    unbudgeted_writes: u8,
}

/// Writes per unit of tokio's cooperative budget (see
/// `ProducerWriter::spends_budget`).
const WRITES_PER_BUDGET_UNIT: u8 = 8;

impl fmt::Debug for ProducerWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerWriter")
            .field("producer", self.producer)
            .field("buffered_bytes", &self.held)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// A buffered writer for one task streaming many messages: see
    /// [`ProducerWriter`].
    pub fn writer(&self) -> ProducerWriter<'_> {
        ProducerWriter {
            producer: self,
            open: OpenBatch::new(self.shared.framing, self.shared.limits.max_bytes),
            credit: Credit::default(),
            held: 0,
            scratch: Vec::new(),
            unbudgeted_writes: 0,
        }
    }
}

impl ProducerWriter<'_> {
    /// Write one message (for a JSON stream, exactly one JSON value),
    /// copied into the writer's batch. Waits only when the buffer budget
    /// has no room (backpressure). Errors: `InvalidArgument` for an empty,
    /// oversize or malformed message (nothing is written), or the
    /// producer's error when a full batch could not be handed over.
    #[inline]
    pub fn write<'w>(&'w mut self, data: &'w [u8]) -> impl Future<Output = Result<()>> + Send + 'w {
        let checked = self.producer.check_message(data);
        WriteFuture::Start(self, data, checked)
    }

    /// Serialize `value` and write it as one message (encoded before the
    /// returned future is first polled, so `T` need not be `Sync`).
    pub fn write_json<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> impl Future<Output = Result<()>> + Send + '_ {
        self.scratch.clear();
        let encoded = crate::json_encode::write(&mut self.scratch, value)
            .map_err(|e| self.producer.encode_error(e))
            .and_then(|()| self.producer.check_size(self.scratch.len()));
        WriteFuture::Start(self, Scratch, encoded)
    }

    /// Whether this write spends a unit of tokio's cooperative budget: one
    /// write in [`WRITES_PER_BUDGET_UNIT`], so that a task writing in a
    /// loop still yields to the producer's task and the connections (on a
    /// single-threaded runtime, after 128 units) without paying for the
    /// budget on every buffered write.
    #[inline]
    fn spends_budget(&mut self) -> bool {
        self.unbudgeted_writes += 1;
        if self.unbudgeted_writes < WRITES_PER_BUDGET_UNIT {
            return false;
        }
        self.unbudgeted_writes = 0;
        true
    }

    /// Write a checked message now if the buffer budget has room for it:
    /// `Ok(false)` when it has not (nothing written). Always inlined: it is
    /// most of a write.
    #[inline(always)]
    fn try_write(&mut self, data: &[u8]) -> Result<bool> {
        if self
            .open
            .would_overflow(data.len(), self.producer.shared.limits)
        {
            self.submit()?;
        }
        if !self
            .producer
            .shared
            .budget
            .take(&mut self.credit, data.len())
        {
            return Ok(false);
        }
        self.push(data);
        Ok(true)
    }

    /// Wait for buffer room, then write a checked message.
    async fn write_when_room(&mut self, data: &[u8]) -> Result<()> {
        self.wait_for_room(data.len()).await?;
        self.push(data);
        Ok(())
    }

    /// Copy a message whose budget is taken into the batch (always
    /// inlined: a call here costs more than the rest of a write).
    #[inline(always)]
    fn push(&mut self, data: &[u8]) {
        self.open.push(data, false);
        self.held += data.len();
        if self.open.is_full(self.producer.shared.limits) {
            // The message is written either way: a failed hand-over leaves
            // the batch buffered, and the next write, `submit` or `flush`
            // reports it (an error from `write` means "not written").
            let _ = self.submit();
        }
    }

    /// No room for `len` more bytes: hand over what is buffered (it may be
    /// what holds the room) and wait for exactly `len`.
    async fn wait_for_room(&mut self, len: usize) -> Result<()> {
        let shared = &self.producer.shared;
        shared.budget.return_credit(&mut self.credit);
        {
            let mut state = shared.lock();
            // Credit idle in the producer's state could be the room too.
            shared.budget.return_shared(&mut state.credit);
        }
        self.submit()?;
        shared.budget.acquire(len, &shared.done).await
    }

    /// Hand the buffered messages to the producer now, without waiting for
    /// them to be sent. On error (the producer was closed, or its epoch
    /// failed) they stay in the writer.
    pub fn submit(&mut self) -> Result<()> {
        if self.open.is_empty() {
            return Ok(());
        }
        let shared = &self.producer.shared;
        let mut state = shared.lock();
        self.producer.check_open(&state)?;
        // What others appended before this hand-over goes first.
        shared.seal_open(&mut state);
        let ordinal = state.take_ordinal();
        shared.hand_off(self.open.seal(ordinal));
        drop(state);
        self.held = 0;
        shared.wake.notify_one();
        Ok(())
    }

    /// Hand the buffered messages over and wait until every message the
    /// producer had before this call is acknowledged or failed, like
    /// [`Producer::flush`] (whose first failure it returns).
    pub async fn flush(&mut self) -> Result<()> {
        self.submit()?;
        self.producer.flush().await
    }

    /// Payload bytes written and not yet handed to the producer.
    pub fn buffered_bytes(&self) -> usize {
        self.held
    }
}

impl Drop for ProducerWriter<'_> {
    fn drop(&mut self) {
        let shared = &self.producer.shared;
        if let Err(error) = self.submit() {
            let messages = self.open.len();
            let batch = self.open.seal(0);
            tracing::warn!(
                producer_id = %shared.producer_id,
                stream = %shared.stream.url().path(),
                messages,
                error = %error,
                "producer writer dropped with messages the producer no longer accepts; handed to on_error"
            );
            shared.report_failed(FailedBatch {
                error,
                messages,
                body: batch.body,
                epoch: self.producer.epoch(),
                seq: None,
            });
            shared.budget.release(self.held);
        }
        shared.budget.return_credit(&mut self.credit);
    }
}

/// The future of one [`ProducerWriter::write`] or
/// [`ProducerWriter::write_json`]: written at its first poll when the
/// budget has room (no async state machine per message), else waiting for
/// room in a boxed future (rare; its state inline would be moved with every
/// write). Generic over where the message is, so that each kind of write
/// compiles to its own small, inlined poll.
enum WriteFuture<'w, 'a, M> {
    /// Not yet polled: the writer, the message, and its check's verdict.
    Start(&'w mut ProducerWriter<'a>, M, Result<()>),
    /// Waiting for buffer room.
    Waiting(Pin<Box<dyn Future<Output = Result<()>> + Send + 'w>>),
    /// Finished (polled again: a bug in the caller, answered with a panic
    /// like any finished future's).
    Done,
}

/// Where a [`WriteFuture`]'s message is.
trait Message<'w>: Sized {
    /// Write the message now if the budget has room: `Ok(false)` if not.
    fn try_write(&self, writer: &mut ProducerWriter<'_>) -> Result<bool>;

    /// Wait for room, then write the message.
    fn write_when_room<'a: 'w>(
        self,
        writer: &'w mut ProducerWriter<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'w>>;
}

/// The caller's bytes.
impl<'w> Message<'w> for &'w [u8] {
    #[inline(always)]
    fn try_write(&self, writer: &mut ProducerWriter<'_>) -> Result<bool> {
        writer.try_write(self)
    }

    fn write_when_room<'a: 'w>(
        self,
        writer: &'w mut ProducerWriter<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'w>> {
        Box::pin(writer.write_when_room(self))
    }
}

/// The writer's `scratch`: an encoded JSON value.
struct Scratch;

impl<'w> Message<'w> for Scratch {
    #[inline(always)]
    fn try_write(&self, writer: &mut ProducerWriter<'_>) -> Result<bool> {
        // Out of the writer while it is written (and back after, for the
        // next value's encoding).
        let scratch = std::mem::take(&mut writer.scratch);
        let written = writer.try_write(&scratch);
        writer.scratch = scratch;
        written
    }

    fn write_when_room<'a: 'w>(
        self,
        writer: &'w mut ProducerWriter<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'w>> {
        Box::pin(async move {
            let scratch = std::mem::take(&mut writer.scratch);
            let written = writer.write_when_room(&scratch).await;
            writer.scratch = scratch;
            written
        })
    }
}

impl<'w, 'a: 'w, M: Message<'w> + Unpin> Future for WriteFuture<'w, 'a, M> {
    type Output = Result<()>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        // Unpin: it holds references, a box, and the message (a slice or a
        // marker).
        let this = self.get_mut();
        loop {
            match std::mem::replace(this, WriteFuture::Done) {
                WriteFuture::Start(writer, message, checked) => {
                    checked?;
                    if writer.spends_budget() {
                        match tokio::task::coop::poll_proceed(cx) {
                            Poll::Ready(spent) => spent.made_progress(),
                            Poll::Pending => {
                                *this = WriteFuture::Start(writer, message, Ok(()));
                                return Poll::Pending;
                            }
                        }
                    }
                    if message.try_write(writer)? {
                        return Poll::Ready(Ok(()));
                    }
                    *this = WriteFuture::Waiting(message.write_when_room(writer));
                }
                WriteFuture::Waiting(mut wait) => {
                    let polled = wait.as_mut().poll(cx);
                    if polled.is_pending() {
                        *this = WriteFuture::Waiting(wait);
                    }
                    return polled;
                }
                WriteFuture::Done => panic!("ProducerWriter::write polled after it finished"),
            }
        }
    }
}
