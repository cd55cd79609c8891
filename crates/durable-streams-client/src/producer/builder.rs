//! [`ProducerBuilder`]: a producer's configuration, its validation, and
//! starting the producer's task.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::HeaderValue;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::batch::{BatchLimits, Framing, OpenBatch};
use super::budget::{Budget, Credit};
use super::driver::Driver;
use super::{
    DEFAULT_DELIVERY_TIMEOUT, DEFAULT_LINGER, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_IN_FLIGHT, ErrorCallback, FailedBatch, MAX_SAFE_INTEGER, Producer, ProducerShared,
    ProducerState, ProducerStats, clock_epoch,
};
use crate::error::{Error, Result};
use crate::stream::{Stream, is_json_content_type};
#[cfg(doc)]
use crate::{error::ErrorKind, producer::Receipt};

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
    /// The defaults, see [`Producer::builder`].
    pub(super) fn new(stream: &Stream, producer_id: String) -> Self {
        ProducerBuilder {
            stream: stream.clone(),
            producer_id,
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

    /// Requests in flight at once, at most (default 5). 1 means strictly one
    /// at a time. The producer learns how many pay off: it starts at one,
    /// grows while no request overtakes another on the way to the server,
    /// and halves on a sequence gap (each costs a re-upload), probing higher
    /// again after a long clean run.
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
                credit: Credit::default(),
                next_ordinal: 0,
                poison: None,
                first_error: None,
                closed: false,
            }),
            sealed: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            budget: Budget::new(self.max_buffered_bytes),
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
