//! The idempotent producer (PROTOCOL.md 5.2.1): exactly-once, batched,
//! pipelined writes with bounded memory.
//!
//! Messages are appended without waiting ([`Producer::append`]), with
//! backpressure and a receipt ([`Producer::send`]), or with backpressure
//! and no receipt of their own ([`Producer::feed`]: failures reach
//! [`Producer::flush`], [`Producer::close`], [`ProducerBuilder::on_error`]
//! and the appends after them). One task streaming many small messages is
//! fastest through a [`ProducerWriter`] ([`Producer::writer`]): a batch of
//! its own, no lock per message, handed over whole. A background task
//! batches them (by bytes, items and linger time), numbers each request with
//! `Producer-Id` / `Producer-Epoch` / `Producer-Seq`, keeps up to
//! `max_in_flight` requests in flight, and repeats failed attempts with the
//! same numbers so that the server drops duplicates.
//!
//! # Guarantees and choices
//!
//! * **Exactly once within an epoch.** Network errors, 5xx and 429 are
//!   retried with the same `(id, epoch, seq)`, backing off under the
//!   client's [`RetryPolicy`](crate::RetryPolicy) schedule until the batch's
//!   delivery timeout ([`ProducerBuilder::delivery_timeout`], 2 minutes by
//!   default) expires ([`ErrorKind::DeliveryTimeout`]); an outage shorter
//!   than that only delays. A `204` answer after an attempt whose outcome
//!   was unknown (connection broken after sending, timeout, 500/502/504) is
//!   the server dropping our own repeat and counts as success
//!   ([`Receipt::duplicate`]). A sequence gap (requests reordered on the
//!   way) waits for the lower sequences and resends, and halves the number
//!   of requests kept in flight (see [`ProducerBuilder::max_in_flight`]).
//! * **Proof of success.** A batch counts as written only on a `2xx` whose
//!   echoed `Producer-Epoch` / `Producer-Seq` (when sent) match the request;
//!   a mismatch is an error ([`DecodeKind::Header`](crate::DecodeKind)). A
//!   missing `Stream-Next-Offset` is not an error: [`Receipt::offset`] is
//!   then `None`.
//! * **Collisions.** A `204` to the first attempt of a tuple (no earlier
//!   attempt could have been applied) means another instance or an earlier
//!   run already wrote that `(id, epoch, seq)`: it is never reported as
//!   success but fails with [`ErrorKind::ProducerIdCollision`], or, with
//!   `auto_claim`, claims the next epoch and re-sends
//!   ([`ProducerBuilder::detect_collisions`] turns this off for deliberate
//!   re-sends of identical batches). Until seq 0 of an
//!   epoch is acknowledged only one request is in flight, so a collision
//!   is caught at the first batch, before anything later is written.
//! * **Lost server state.** A server that forgets producer state (restart
//!   without durable producer state) answers a sequence gap expecting seq 0:
//!   [`ErrorKind::ProducerStateLost`], or with
//!   [`ProducerBuilder::recover_lost_state`], a new epoch and a re-send of
//!   every unacknowledged batch in order; batches whose outcome was unknown
//!   at the loss may then be stored twice ([`Producer::stats`],
//!   [`Producer::possible_duplicates`]).
//! * **Order.** Messages reach the stream in the order they were appended.
//! * **One failure fails the epoch.** After a batch fails for good (delivery
//!   timeout, stale epoch without auto-claim, collision, lost state without
//!   recovery, closed stream, 4xx), every
//!   later batch would hit a sequence gap, so pending and new messages fail at
//!   once with the same error (on the receipts, [`ProducerBuilder::on_error`]
//!   and the next [`Producer::flush`]) until [`Producer::restart`] moves to
//!   the next epoch. Nothing is dropped silently.
//! * **Epochs.** A new producer starts at its epoch with seq 0; the default
//!   epoch is [`clock_epoch`] (milliseconds since the Unix epoch), so a
//!   program restarted with a fixed producer id starts a newer session
//!   instead of having its batches taken for duplicates of the previous
//!   run's. Set [`ProducerBuilder::epoch`] when you persist epochs (each run
//!   higher), or use `auto_claim` for ephemeral writers: on `403` it moves
//!   to the server's epoch + 1 once the old epoch's requests have resolved
//!   and resends what was not acknowledged, in order.
//! * **Memory.** Appended-but-unacknowledged bytes are bounded by
//!   `max_buffered_bytes`; `append` answers [`ErrorKind::BufferFull`] when
//!   there is no room, `send` and `feed` wait for room (a large message
//!   waiting for room is not starved by later small ones).
//! * **Shutdown.** [`Producer::close`] flushes and stops the task. Dropping a
//!   producer stops its task at once (in-flight requests are abandoned) and
//!   logs a warning if messages were not acknowledged.
//!
//! ```no_run
//! # async fn demo() -> durable_streams_client::Result<()> {
//! use durable_streams_client::{Client, CreateOptions, Producer};
//!
//! let client = Client::new();
//! let stream = client.stream("http://127.0.0.1:4437/v1/stream/orders")?;
//! stream.create_with(CreateOptions::json()).await?;
//! let producer = Producer::builder(&stream, "order-service-1").build()?;
//! producer.append_json(&serde_json::json!({"event": "created"}))?;
//! let receipt = producer.send_json(&serde_json::json!({"event": "paid"})).await?.await?;
//! println!("written up to {:?}", receipt.offset);
//! producer.close().await?;
//! # Ok(()) }
//! ```

mod batch;
mod budget;
mod builder;
mod driver;
mod feed;
mod handle;
#[cfg(test)]
mod scripted_tests;
mod writer;

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use self::batch::{BatchLimits, Framing, OpenBatch, OutcomeReceiver, SealedBatch};
use self::budget::{Budget, Credit};
pub use self::builder::ProducerBuilder;
pub use self::handle::Producer;
pub use self::writer::ProducerWriter;
#[cfg(doc)]
use crate::error::ErrorKind;
use crate::error::{Error, Result};
use crate::offset::Offset;
use crate::stream::Stream;

/// Largest epoch or sequence number the protocol allows (2^53-1, for
/// JavaScript interoperability).
pub(crate) const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Default `max_batch_bytes`: 1 MiB.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 1 << 20;
/// Default `linger`: 5 ms.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);
/// Default `max_in_flight`: 5 requests.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 5;
/// Default `max_buffered_bytes`: 64 MiB.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 64 << 20;
/// Default `delivery_timeout`: 2 minutes.
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// The default epoch of a new producer: milliseconds since the Unix epoch
/// (capped at 2^53-1). A program restarted with the same producer id thus
/// starts a higher epoch than its previous run (the server accepts it as a
/// new session at seq 0) instead of repeating the previous run's
/// `(id, epoch, seq)` tuples, which the server would drop as duplicates. A
/// clock set back between two runs gives a lower epoch: the server answers
/// `403` (stale epoch), which `auto_claim` resolves; two instances built in
/// the same millisecond collide, which the producer detects
/// ([`ErrorKind::ProducerIdCollision`]).
pub fn clock_epoch() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(ms)
        .unwrap_or(MAX_SAFE_INTEGER)
        .min(MAX_SAFE_INTEGER)
}

/// Counters of a producer's recoveries, see [`Producer::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerStats {
    /// Batches re-sent in a new epoch although an attempt in the old epoch
    /// had an unknown outcome (it may have been written): each may now be
    /// stored twice. Only epoch changes (`recover_lost_state`, `auto_claim`,
    /// [`Producer::restart`]) can duplicate; retries within an epoch are
    /// deduplicated by the server.
    pub possible_duplicate_batches: u64,
    /// The messages of those batches.
    pub possible_duplicate_messages: u64,
    /// Times the server lost this producer's state
    /// ([`ErrorKind::ProducerStateLost`]).
    pub state_losses: u64,
    /// Times another writer had already used this producer's
    /// `(id, epoch, seq)` ([`ErrorKind::ProducerIdCollision`]).
    pub collisions: u64,
    /// Epochs claimed automatically (stale epoch with `auto_claim`,
    /// collision with `auto_claim`, lost state with `recover_lost_state`).
    pub epochs_claimed: u64,
}

type ErrorCallback = Arc<dyn Fn(FailedBatch) + Send + Sync>;

/// What a message's acknowledgement says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// The stream's tail offset after the batch holding this message (the
    /// server's `Stream-Next-Offset`), when the server reported it.
    pub offset: Option<Offset>,
    /// The server already had this batch (an earlier attempt was applied).
    pub duplicate: bool,
    /// The epoch the batch was written in.
    pub epoch: u64,
    /// The batch's `Producer-Seq`.
    pub seq: u64,
}

/// A batch that could not be written, as handed to
/// [`ProducerBuilder::on_error`]: the data is returned so it is never lost.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FailedBatch {
    /// Why it failed.
    pub error: Error,
    /// How many messages the batch held.
    pub messages: usize,
    /// The request body (for JSON streams, an array of the messages).
    pub body: Bytes,
    /// The epoch it was meant for.
    pub epoch: u64,
    /// Its sequence number, if it was ever sent.
    pub seq: Option<u64>,
}

/// A pending acknowledgement returned by [`Producer::send`]: await it for
/// the [`Receipt`], or drop it if you only need backpressure.
#[derive(Debug)]
#[must_use = "await the Ack for the receipt, or drop it explicitly"]
pub struct Ack {
    rx: OutcomeReceiver,
}

impl IntoFuture for Ack {
    type Output = Result<Receipt>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Receipt>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.rx.wait().await })
    }
}

/// State shared by the handle and its task.
pub(crate) struct ProducerShared {
    pub(crate) stream: Stream,
    pub(crate) producer_id: String,
    pub(crate) content_type: String,
    framing: Framing,
    limits: BatchLimits,
    pub(crate) linger: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) auto_claim: bool,
    pub(crate) delivery_timeout: Duration,
    pub(crate) recover_lost_state: bool,
    pub(crate) detect_collisions: bool,
    /// The client's retry schedule, for resends within the delivery timeout.
    pub(crate) retry: crate::retry::RetryPolicy,
    pub(crate) stats: Mutex<ProducerStats>,
    max_buffered_bytes: usize,
    pub(crate) on_error: Option<ErrorCallback>,
    state: Mutex<ProducerState>,
    /// Sealed batches on their way to the task. A lock of their own: the
    /// task takes them without waiting for appenders holding `state`.
    sealed: Mutex<VecDeque<SealedBatch>>,
    /// Wakes the task: a batch was sealed or a new batch started lingering.
    pub(crate) wake: Notify,
    /// Bounds the payload appended but not yet resolved.
    pub(crate) budget: Budget,
    /// How many batches (by ordinal) have resolved, contiguously.
    pub(crate) resolved: watch::Sender<u64>,
    /// Cancelled when the task ends, however it ends.
    pub(crate) done: CancellationToken,
    pub(crate) epoch: AtomicU64,
    pub(crate) next_seq: AtomicU64,
}

pub(crate) struct ProducerState {
    pub(crate) open: OpenBatch,
    /// Buffer budget taken ahead for the next appends.
    credit: Credit,
    next_ordinal: u64,
    /// Set by the task when a batch failed for good; cleared by restart.
    pub(crate) poison: Option<Error>,
    /// The first failure since the last flush.
    pub(crate) first_error: Option<Error>,
    /// `close` was called or the task ended: no more appends.
    pub(crate) closed: bool,
}

impl ProducerState {
    pub(crate) fn take_ordinal(&mut self) -> u64 {
        let ordinal = self.next_ordinal;
        self.next_ordinal += 1;
        ordinal
    }
}

impl ProducerShared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, ProducerState> {
        // The state stays consistent across a panic elsewhere (no invariant
        // spans an unwind), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seal the open batch, if it holds messages, and hand it to the task.
    pub(crate) fn seal_open(&self, state: &mut ProducerState) {
        if !state.open.is_empty() {
            let ordinal = state.take_ordinal();
            let batch = state.open.seal(ordinal);
            self.hand_off(batch);
        }
    }

    /// Queue a sealed batch for the task. Called with the state locked, so
    /// batches are queued in ordinal order.
    pub(crate) fn hand_off(&self, batch: SealedBatch) {
        self.sealed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(batch);
    }

    /// The sealed batches not yet taken by the task, in order.
    pub(crate) fn take_sealed(&self) -> VecDeque<SealedBatch> {
        std::mem::take(&mut *self.sealed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Hand a batch that will not be written to `on_error`, if set.
    pub(crate) fn report_failed(&self, failed: FailedBatch) {
        if let Some(callback) = &self.on_error {
            // A panicking callback must not take down the caller (the task
            // that owns the data, or a writer being dropped).
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(failed))).is_err()
            {
                tracing::error!("producer on_error callback panicked");
            }
        }
    }

    fn unacknowledged_bytes(&self) -> usize {
        self.budget.unacknowledged()
    }
}

#[cfg(test)]
mod tests;
