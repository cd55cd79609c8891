//! The idempotent producer (PROTOCOL.md 5.2.1): exactly-once, batched,
//! pipelined writes with bounded memory.
//!
//! Messages are appended without waiting ([`Producer::append`]) or with
//! backpressure and a receipt ([`Producer::send`]). A background task
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
//!   way) waits for the lower sequences and resends.
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
//!   there is no room, `send` waits for room.
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
mod driver;
#[cfg(test)]
mod scripted_tests;

use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderValue;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::batch::{BatchLimits, Framing, OpenBatch, OutcomeReceiver, SealedBatch};
use self::driver::{Driver, ProducerControl};
use crate::error::{Error, ErrorKind, Result};
use crate::offset::Offset;
use crate::stream::{CloseResult, Stream, is_json_content_type};

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

    fn into_future(mut self) -> Self::IntoFuture {
        Box::pin(async move {
            match self.rx.wait_for(Option::is_some).await {
                Ok(outcome) => outcome
                    .clone()
                    .unwrap_or_else(|| Err(Error::new(ErrorKind::ProducerClosed))),
                // The batch was dropped unresolved: the producer stopped.
                Err(_) => Err(Error::new(ErrorKind::ProducerClosed)),
            }
        })
    }
}

/// Configuration of a [`Producer`]; see [`Producer::builder`].
#[must_use]
pub struct ProducerBuilder {
    stream: Stream,
    producer_id: String,
    epoch: Option<u64>,
    auto_claim: bool,
    delivery_timeout: Duration,
    recover_lost_state: bool,
    detect_collisions: bool,
    max_batch_bytes: usize,
    max_batch_items: Option<usize>,
    linger: Duration,
    max_in_flight: usize,
    max_buffered_bytes: usize,
    content_type: Option<String>,
    on_error: Option<ErrorCallback>,
}

impl fmt::Debug for ProducerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerBuilder")
            .field("stream", &self.stream.url().path())
            .field("producer_id", &self.producer_id)
            .field("epoch", &self.epoch)
            .field("auto_claim", &self.auto_claim)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("recover_lost_state", &self.recover_lost_state)
            .field("detect_collisions", &self.detect_collisions)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("max_batch_items", &self.max_batch_items)
            .field("linger", &self.linger)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_buffered_bytes", &self.max_buffered_bytes)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

impl ProducerBuilder {
    /// The starting epoch. Default: [`clock_epoch`], milliseconds since the
    /// Unix epoch, so that each run of a program with a fixed producer id
    /// starts a newer epoch than the last. Set it explicitly when the epoch
    /// is persisted; each new run of the same logical producer must use a
    /// higher one (a repeated epoch is detected as a
    /// [`ErrorKind::ProducerIdCollision`]).
    pub fn epoch(mut self, epoch: u64) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// Move to a new epoch and resend instead of failing (default false) on
    /// a stale-epoch answer (403: to the server's epoch + 1) and on a
    /// producer id collision (to this epoch + 1). For ephemeral writers; a
    /// zombie and its successor would keep fencing each other.
    pub fn auto_claim(mut self, auto_claim: bool) -> Self {
        self.auto_claim = auto_claim;
        self
    }

    /// How long a batch may take to be acknowledged, counted from its first
    /// send (default [`DEFAULT_DELIVERY_TIMEOUT`], 2 minutes; like Kafka's
    /// `delivery.timeout.ms`). Network errors, 5xx and 429 are retried with
    /// the same `(id, epoch, seq)`, backing off under the client's
    /// [`RetryPolicy`](crate::RetryPolicy) schedule (its `max_retries` does
    /// not apply), until this expires; then the batch fails with
    /// [`ErrorKind::DeliveryTimeout`]. Meanwhile the buffer fills up:
    /// `send` waits and `append` answers [`ErrorKind::BufferFull`].
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// When the server lost this producer's state (it expects seq 0 again
    /// after acknowledging higher seqs, as a server restarted without
    /// durable producer state does), claim the next epoch and re-send every
    /// unacknowledged batch in order instead of failing with
    /// [`ErrorKind::ProducerStateLost`] (default false). Batches whose
    /// outcome was unknown when the state was lost (in flight at a crash)
    /// may have been written already and are then stored twice: their
    /// number is reported by [`Producer::stats`] and
    /// [`Producer::possible_duplicates`].
    pub fn recover_lost_state(mut self, recover: bool) -> Self {
        self.recover_lost_state = recover;
        self
    }

    /// Whether a duplicate answer (`204`) to the first attempt of a batch is
    /// a [`ErrorKind::ProducerIdCollision`] (default true). Turn it off only
    /// when a new instance deliberately re-sends, with the same id, epoch
    /// and batching, exactly the batches an earlier instance sent, relying
    /// on the server to skip those it has: the duplicates are then
    /// acknowledged as written ([`Receipt::duplicate`]). Otherwise a batch
    /// the server never stored would be reported as written.
    pub fn detect_collisions(mut self, detect: bool) -> Self {
        self.detect_collisions = detect;
        self
    }

    /// Send a batch once it holds this many payload bytes (default 1 MiB).
    /// A single larger message is sent alone.
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// Send a batch once it holds this many messages (default: no limit).
    pub fn max_batch_items(mut self, items: usize) -> Self {
        self.max_batch_items = Some(items);
        self
    }

    /// How long the first message of a batch may wait for more (default
    /// 5 ms). Zero sends as soon as a request slot is free.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Requests in flight at once (default 5). 1 means strictly one at a time.
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests;
        self
    }

    /// Bound on appended but unacknowledged payload bytes (default 64 MiB).
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// The content type to send (default: the stream's, which must be known:
    /// set on the [`Stream`] or learned by `create`/`head`).
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Called once per batch that fails for good, from the producer's task;
    /// keep it short. Receives the batch's data so it can be re-routed.
    pub fn on_error(mut self, callback: impl Fn(FailedBatch) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(callback));
        self
    }

    /// Check every option; the error names the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.producer_id.is_empty() {
            return Err(Error::invalid_argument(
                "producer_id",
                "the producer id must not be empty",
            ));
        }
        if HeaderValue::from_str(&self.producer_id).is_err() {
            return Err(Error::invalid_argument(
                "producer_id",
                "the producer id must be visible ASCII (it is sent as a header)",
            ));
        }
        if self.epoch.is_some_and(|e| e > MAX_SAFE_INTEGER) {
            return Err(Error::invalid_argument(
                "epoch",
                "epoch must be at most 2^53-1",
            ));
        }
        if self.delivery_timeout.is_zero() {
            return Err(Error::invalid_argument(
                "delivery_timeout",
                "delivery_timeout must be greater than zero",
            ));
        }
        if self.max_batch_bytes == 0 {
            return Err(Error::invalid_argument(
                "max_batch_bytes",
                "max_batch_bytes must be greater than 0",
            ));
        }
        if self.max_batch_items == Some(0) {
            return Err(Error::invalid_argument(
                "max_batch_items",
                "max_batch_items must be greater than 0",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(Error::invalid_argument(
                "max_in_flight",
                "max_in_flight must be greater than 0",
            ));
        }
        if self.max_buffered_bytes == 0 || self.max_buffered_bytes > Semaphore::MAX_PERMITS {
            return Err(Error::invalid_argument(
                "max_buffered_bytes",
                "max_buffered_bytes must be greater than 0 and fit the platform",
            ));
        }
        Ok(())
    }

    /// Like [`build`](Self::build), for a stream whose content type is not
    /// known yet (created elsewhere): learns it with one HEAD first.
    pub async fn connect(self) -> Result<Producer> {
        if self.content_type.is_none() {
            self.stream.resolve_content_type().await?;
        }
        self.build()
    }

    /// Validate and start the producer's task on the current tokio runtime.
    pub fn build(self) -> Result<Producer> {
        self.validate()?;
        let url = self.stream.url().clone();
        let content_type = self
            .content_type
            .clone()
            .or_else(|| self.stream.content_type())
            .ok_or_else(|| {
                Error::invalid_argument(
                    "content_type",
                    "the stream's content type is not known: use connect() (one HEAD), create() \
                     or head() the stream first, or set it on the Stream or the builder",
                )
                .with_url(&url)
            })?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::invalid_argument("runtime", "a producer must be built inside a tokio runtime")
        })?;
        let framing = if is_json_content_type(&content_type) {
            Framing::JsonArray
        } else {
            Framing::Concat
        };
        let (resolved, _) = watch::channel(0);
        let epoch = self.epoch.unwrap_or_else(clock_epoch);
        let retry = self.stream.client().retry_policy().clone();
        let shared = Arc::new(ProducerShared {
            stream: self.stream,
            producer_id: self.producer_id,
            content_type,
            framing,
            limits: BatchLimits {
                max_bytes: self.max_batch_bytes,
                max_items: self.max_batch_items,
            },
            linger: self.linger,
            max_in_flight: self.max_in_flight,
            auto_claim: self.auto_claim,
            delivery_timeout: self.delivery_timeout,
            recover_lost_state: self.recover_lost_state,
            detect_collisions: self.detect_collisions,
            retry,
            stats: Mutex::new(ProducerStats::default()),
            max_buffered_bytes: self.max_buffered_bytes,
            on_error: self.on_error,
            state: Mutex::new(ProducerState {
                open: OpenBatch::new(framing, self.max_batch_bytes),
                sealed: VecDeque::new(),
                next_ordinal: 0,
                poison: None,
                first_error: None,
                closed: false,
            }),
            wake: Notify::new(),
            budget: Semaphore::new(self.max_buffered_bytes),
            resolved,
            done: CancellationToken::new(),
            epoch: AtomicU64::new(epoch),
            next_seq: AtomicU64::new(0),
        });
        let (control_tx, control_rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let driver = Driver::new(Arc::clone(&shared), control_rx, cancel.clone(), epoch);
        let task = runtime.spawn(driver.run());
        Ok(Producer {
            shared,
            control: control_tx,
            cancel,
            task: Mutex::new(Some(task)),
        })
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
    /// Wakes the task: a batch was sealed or a new batch started lingering.
    pub(crate) wake: Notify,
    /// Permits are bytes: appended but not yet resolved payload.
    pub(crate) budget: Semaphore,
    /// How many batches (by ordinal) have resolved, contiguously.
    pub(crate) resolved: watch::Sender<u64>,
    /// Cancelled when the task ends, however it ends.
    pub(crate) done: CancellationToken,
    pub(crate) epoch: AtomicU64,
    pub(crate) next_seq: AtomicU64,
}

pub(crate) struct ProducerState {
    pub(crate) open: OpenBatch,
    pub(crate) sealed: VecDeque<SealedBatch>,
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

    fn seal_open(&mut self) {
        if !self.open.is_empty() {
            let ordinal = self.take_ordinal();
            let batch = self.open.seal(ordinal);
            self.sealed.push_back(batch);
        }
    }
}

impl ProducerShared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, ProducerState> {
        // The state stays consistent across a panic elsewhere (no invariant
        // spans an unwind), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unacknowledged_bytes(&self) -> usize {
        self.max_buffered_bytes - self.budget.available_permits()
    }
}

/// An idempotent producer for one stream. `Send + Sync`: share it behind an
/// `Arc` to append from many tasks. See the [module docs](self).
pub struct Producer {
    shared: Arc<ProducerShared>,
    control: mpsc::Sender<ProducerControl>,
    cancel: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
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
        ProducerBuilder {
            stream: stream.clone(),
            producer_id: producer_id.into(),
            epoch: None,
            auto_claim: false,
            delivery_timeout: DEFAULT_DELIVERY_TIMEOUT,
            recover_lost_state: false,
            detect_collisions: true,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_batch_items: None,
            linger: DEFAULT_LINGER,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            content_type: None,
            on_error: None,
        }
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

    /// Appended payload bytes not yet acknowledged (or failed).
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
        let data = data.into();
        self.check_message(&data)?;
        let mut state = self.shared.lock();
        self.check_open(&state)?;
        if !self.reserve_now(data.len()) {
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
            .write(|body| serde_json::to_writer(bytes::BufMut::writer(body), value))
            .map_err(|e| self.encode_error(e))?;
        if written.len > self.shared.max_buffered_bytes {
            state.open.rollback(written);
            return Err(too_large(written.len).with_url(self.shared.stream.url()));
        }
        if !self.reserve_now(written.len) {
            state.open.rollback(written);
            return Ok(Err(()));
        }
        let first = state.open.is_empty();
        let ProducerState {
            open,
            sealed,
            next_ordinal,
            ..
        } = state;
        let (full, rx) = open.commit(written, self.shared.limits, want_outcome, || {
            let ordinal = *next_ordinal;
            *next_ordinal += 1;
            ordinal
        });
        let wake = first || full.is_some();
        if let Some(batch) = full {
            sealed.push_back(batch);
        }
        self.after_push(state, wake);
        Ok(Ok(rx))
    }

    /// Append one message, waiting for buffer room (backpressure). The
    /// returned [`Ack`] resolves to the message's [`Receipt`] once the
    /// server acknowledged its batch.
    pub async fn send(&self, data: impl Into<Bytes>) -> Result<Ack> {
        let data = data.into();
        self.check_message(&data)?;
        if !self.reserve_now(data.len()) {
            // `check_message` bounds the length by u32 permits.
            let permits = u32::try_from(data.len()).map_err(|_| too_large(data.len()))?;
            let reserved = tokio::select! {
                permit = self.shared.budget.acquire_many(permits) => permit,
                _ = self.shared.done.cancelled() => return Err(Error::new(ErrorKind::ProducerClosed)),
            };
            reserved
                .map_err(|_| Error::new(ErrorKind::ProducerClosed))?
                .forget();
        }
        let mut state = self.shared.lock();
        if let Err(e) = self.check_open(&state) {
            self.shared.budget.add_permits(data.len());
            return Err(e);
        }
        let rx = self.push(&mut state, data, true);
        Ok(Ack {
            rx: rx.expect("push returns a receiver when asked"),
        })
    }

    /// Serialize `value` and [`send`](Self::send) it. Encodes straight into
    /// the batch when there is buffer room.
    pub async fn send_json<T: Serialize + Sync + ?Sized>(&self, value: &T) -> Result<Ack> {
        let pushed = {
            let mut state = self.shared.lock();
            self.check_open(&state)?;
            self.push_json(&mut state, value, true)?
        };
        match pushed {
            Ok(rx) => Ok(Ack {
                rx: rx.expect("push_json returns a receiver when asked"),
            }),
            // No room now: wait for it like `send`.
            Err(()) => self.send(self.encode_json(value)?).await,
        }
    }

    /// Wait until every message appended before this call is acknowledged
    /// or failed. Returns the first failure since the previous flush.
    pub async fn flush(&self) -> Result<()> {
        let target = {
            let mut state = self.shared.lock();
            state.seal_open();
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
        let permits = u32::try_from(len).map_err(|_| too_large(len))?;
        self.shared
            .budget
            .acquire_many(permits)
            .await
            .map_err(|_| Error::new(ErrorKind::ProducerClosed))?
            .forget();
        let rx = {
            let mut state = self.shared.lock();
            if let Err(e) = self.check_open(&state) {
                self.shared.budget.add_permits(len);
                return Err(e);
            }
            state.seal_open();
            let body = if final_message.is_empty() {
                Bytes::new()
            } else {
                batch::frame_single(self.shared.framing, &final_message)
            };
            let ordinal = state.take_ordinal();
            let (batch, rx) = SealedBatch::whole(ordinal, body, len, true);
            state.sealed.push_back(batch);
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

    fn check_message(&self, data: &[u8]) -> Result<()> {
        let url = self.shared.stream.url();
        if data.is_empty() {
            return Err(
                Error::invalid_argument("data", "a message must not be empty").with_url(url),
            );
        }
        if data.len() > self.shared.max_buffered_bytes || u32::try_from(data.len()).is_err() {
            return Err(too_large(data.len()).with_url(url));
        }
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

    fn encode_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| self.encode_error(e))
    }

    fn encode_error(&self, e: serde_json::Error) -> Error {
        Error::invalid_argument("value", format!("could not serialize to JSON: {e}"))
            .with_url(self.shared.stream.url())
    }

    fn check_open(&self, state: &ProducerState) -> Result<()> {
        if state.closed {
            return Err(Error::new(ErrorKind::ProducerClosed).with_url(self.shared.stream.url()));
        }
        if let Some(error) = &state.poison {
            return Err(error.clone());
        }
        Ok(())
    }

    fn reserve_now(&self, len: usize) -> bool {
        let Ok(permits) = u32::try_from(len) else {
            return false;
        };
        match self.shared.budget.try_acquire_many(permits) {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Add an encoded message whose bytes are already reserved.
    fn push(
        &self,
        state: &mut ProducerState,
        message: Bytes,
        want_outcome: bool,
    ) -> Option<OutcomeReceiver> {
        let limits = self.shared.limits;
        let mut wake = false;
        if state.open.would_overflow(message.len(), limits) {
            state.seal_open();
            wake = true;
        }
        if state.open.is_empty()
            && self.shared.framing == Framing::Concat
            && message.len() >= limits.max_bytes
        {
            // A batch-sized byte message is its own body: no copy.
            let ordinal = state.take_ordinal();
            let len = message.len();
            let (batch, rx) = SealedBatch::whole(ordinal, message, len, false);
            state.sealed.push_back(batch);
            self.shared.wake.notify_one();
            return want_outcome.then_some(rx);
        }
        // The first message starts the linger clock in the task.
        wake |= state.open.is_empty();
        let rx = state.open.push(&message, want_outcome);
        self.after_push(state, wake);
        rx
    }

    /// Send a full open batch on its way, and wake the task when a batch
    /// was sealed or a new one started lingering.
    fn after_push(&self, state: &mut ProducerState, mut wake: bool) {
        if state.open.is_full(self.shared.limits) {
            state.seal_open();
            wake = true;
        }
        if wake {
            self.shared.wake.notify_one();
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Client;

    fn stream() -> Stream {
        Client::new()
            .stream("http://127.0.0.1:9/v1/stream/unit")
            .unwrap()
            .with_content_type("application/json")
    }

    fn field_of(builder: ProducerBuilder) -> &'static str {
        match builder.validate().unwrap_err().kind() {
            ErrorKind::InvalidArgument { field } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_options_name_their_field() {
        let s = stream();
        assert_eq!(field_of(Producer::builder(&s, "")), "producer_id");
        assert_eq!(field_of(Producer::builder(&s, "a\nb")), "producer_id");
        assert_eq!(
            field_of(Producer::builder(&s, "p").epoch(MAX_SAFE_INTEGER + 1)),
            "epoch"
        );
        assert_eq!(
            field_of(Producer::builder(&s, "p").max_batch_bytes(0)),
            "max_batch_bytes"
        );
        assert_eq!(
            field_of(Producer::builder(&s, "p").max_batch_items(0)),
            "max_batch_items"
        );
        assert_eq!(
            field_of(Producer::builder(&s, "p").max_in_flight(0)),
            "max_in_flight"
        );
        assert_eq!(
            field_of(Producer::builder(&s, "p").max_buffered_bytes(0)),
            "max_buffered_bytes"
        );
        assert!(
            Producer::builder(&s, "p")
                .epoch(MAX_SAFE_INTEGER)
                .linger(Duration::ZERO)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn build_needs_a_content_type_and_a_runtime() {
        let unknown = Client::new().stream("http://127.0.0.1:9/x").unwrap();
        let err = Producer::builder(&unknown, "p").build().unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::InvalidArgument {
                field: "content_type"
            }
        );
        let err = Producer::builder(&stream(), "p").build().unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::InvalidArgument { field: "runtime" });
    }

    #[tokio::test]
    async fn dropping_the_producer_stops_its_task() {
        let producer = Producer::builder(&stream(), "p").build().unwrap();
        producer.append_json(&1).unwrap();
        assert!(producer.buffered_bytes() > 0);
        let shared = Arc::downgrade(&producer.shared);
        drop(producer);
        // The task held the only other reference; it must end promptly.
        for _ in 0..100 {
            if shared.upgrade().is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the producer task outlived its handle");
    }

    #[tokio::test]
    async fn appends_after_close_fail() {
        let producer = Producer::builder(&stream(), "p").build().unwrap();
        producer.close().await.unwrap();
        assert_eq!(
            producer.append_json(&1).unwrap_err().kind(),
            &ErrorKind::ProducerClosed
        );
        // Nothing is pending, so there is nothing to wait for.
        producer.flush().await.unwrap();
    }
}
