//! Pipelines: concurrent, batched, backpressured processing of a stream with
//! in-order checkpoints (the analog of a Broadway pipeline).
//!
//! ```text
//!             read-ahead window (messages / bytes)
//!   ┌────────┐    ┌──────────────┐    ┌────────────┐
//!   │ reader ├─┬─▶│ processor 0  ├─┬─▶│ batcher a  ├─┐
//!   └───┬────┘ ├─▶│ processor 1  │ └─▶│ batcher b  │ ├─▶ ack tracker ─▶ checkpoint
//!       │      └─▶│ processor …  ├───────────────────┘
//!       └─ register chunk ──────────────────────────────▶ (in offset order)
//! ```
//!
//! * **Source.** One reader reads the stream in any [`LiveMode`] from a
//!   [`StartFrom`] position (by default the checkpoint saved under the
//!   pipeline's name in a [`CheckpointStore`], exactly like a
//!   [consumer](crate::consumer)), reconnecting with a [`RetryPolicy`] after
//!   retryable errors (resuming from the last exact position it read: the
//!   pieces of one large response share its start offset, so up to one
//!   response is read again). Other read errors, and a JSON response that is not an array,
//!   stop the pipeline with that error after a drain. JSON streams yield one
//!   [`Message`] per JSON message ([`Pipeline::json`]); byte streams one
//!   message per read chunk ([`Pipeline::bytes`]).
//! * **Processors.** [`processors`](PipelineBuilder::processors) workers call
//!   the async [`process`](PipelineBuilder::process) function concurrently.
//!   With [`partition_by`](PipelineBuilder::partition_by), messages with the
//!   same key always go to the same worker and are processed one at a time in
//!   stream order (and reach their batcher in that order).
//! * **Batchers.** The processor answers [`Processed::done`] or
//!   [`Processed::batch`] naming a [batcher](PipelineBuilder::batcher); each
//!   batcher collects up to `batch_size` messages or waits at most
//!   `batch_timeout` after the first one, then calls its async batch function.
//! * **Failures.** A message whose processing fails (error, panic, unknown
//!   batcher, or a JSON message that does not decode into `T`) or whose
//!   batch fails goes to the [`on_failure`](PipelineBuilder::on_failure)
//!   callback and, when configured, to a
//!   [dead-letter stream](PipelineBuilder::dead_letter_stream) as a
//!   [`DeadLetter`] JSON record written through an idempotent [`Producer`].
//!   A failed message counts as done once it was dead-lettered (or handed to
//!   the callback when there is no dead-letter stream). If writing a dead
//!   letter fails, the pipeline stops with that error and the checkpoint
//!   stays before the message.
//! * **Acknowledgement.** The checkpoint advances past a read chunk only when
//!   every message of that chunk and of all earlier chunks is done, so the
//!   committed offset moves in stream order although processing is
//!   concurrent. Delivery is at least once: after a crash, messages after the
//!   last commit are processed again.
//! * **Backpressure.** All channels are bounded, and at most
//!   [`max_in_flight_messages`](PipelineBuilder::max_in_flight_messages)
//!   messages and
//!   [`max_in_flight_bytes`](PipelineBuilder::max_in_flight_bytes) bytes are
//!   between the reader and the acknowledgement at any time (a single larger
//!   chunk is let through alone). A slow batcher slows the reader; memory
//!   does not grow.
//! * **Drain.** [`PipelineHandle::shutdown`] stops the reader, lets every
//!   message already read finish (processors, then batchers, which flush
//!   their partial batches), commits the checkpoint and returns.
//!
//! ```no_run
//! use std::time::Duration;
//! use durable_streams_client::pipeline::{Message, Pipeline, Processed};
//! use durable_streams_client::consumer::{FileCheckpointStore, StartFrom};
//! use durable_streams_client::{Client, LiveMode, Result};
//!
//! #[derive(serde::Deserialize)]
//! struct Event { user: String, kind: String }
//!
//! # async fn demo() -> Result<()> {
//! let client = Client::new();
//! let stream = client.stream("http://127.0.0.1:4437/v1/stream/events")?;
//! let handle = Pipeline::json::<Event>(stream)
//!     .name("events")
//!     .live(LiveMode::Auto)
//!     .start_from(StartFrom::Checkpoint)
//!     .checkpoint_store(FileCheckpointStore::new("/var/lib/events"))
//!     .processors(8)
//!     .partition_by(|m: &Message<Event>| m.data.user.clone())
//!     .process(|m: Message<Event>| async move {
//!         let batcher = if m.data.kind == "purchase" { "database" } else { "analytics" };
//!         Ok(Processed::batch(batcher, m))
//!     })
//!     .batcher("database", 100, Duration::from_millis(500), |_info, batch: Vec<Message<Event>>| async move {
//!         println!("insert {} rows", batch.len());
//!         Ok(())
//!     })
//!     .batcher("analytics", 1000, Duration::from_secs(2), |_info, batch: Vec<Message<Event>>| async move {
//!         println!("track {} events", batch.len());
//!         Ok(())
//!     })
//!     .dead_letter_stream(client.stream("http://127.0.0.1:4437/v1/stream/events-dlq")?)
//!     .build()?
//!     .spawn();
//! // ... later:
//! handle.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Telemetry
//!
//! A pipeline runs in a `durable_streams.pipeline` span (field `pipeline`)
//! and emits `durable_streams.pipeline.checkpoint`,
//! `durable_streams.pipeline.failure` and
//! `durable_streams.pipeline.dead_letter` events plus the matching metrics
//! listed in [`telemetry`](crate::telemetry).

mod ack;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::ack::AckTracker;
use crate::consumer::{CheckpointStore, DynCheckpointStore, StartFrom, StopReason};
use crate::error::{DecodeKind, Error, ErrorKind, Result};
use crate::offset::Offset;
use crate::producer::Producer;
use crate::read::{Chunk, LiveMode, Session};
use crate::retry::{Backoff, RetryPolicy};
use crate::runtime::{OnDrop, ReaderConfig, TaskHandle, guard, internal, join_error};
use crate::stream::{JSON_CONTENT_TYPE, Stream};

/// Default [`PipelineBuilder::max_in_flight_messages`]: 10,000.
pub const DEFAULT_MAX_IN_FLIGHT_MESSAGES: usize = 10_000;
/// Default [`PipelineBuilder::max_in_flight_bytes`]: 32 MiB.
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 32 << 20;
/// Default [`PipelineBuilder::channel_capacity`]: 64 messages.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 64;

/// Where a message sits in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Position {
    /// Where the read chunk holding the message starts: reading from here
    /// delivers the message again.
    pub offset: Offset,
    /// The offset right after that chunk (what the checkpoint moves to once
    /// the chunk is done). For a piece of a larger response, which has no
    /// exact position of its own ([`Chunk::exact`](crate::Chunk::exact) is
    /// false), this is where that response started and the checkpoint does
    /// not move for it.
    pub next_offset: Offset,
    /// The message's index within its chunk.
    pub index: usize,
}

impl Position {
    /// A position (for testing processors and batchers).
    pub fn new(offset: Offset, next_offset: Offset, index: usize) -> Self {
        Position {
            offset,
            next_offset,
            index,
        }
    }
}

/// One message flowing through a pipeline.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Message<T> {
    /// The decoded message (processors may replace it before batching).
    pub data: T,
    /// Where it came from.
    pub position: Position,
    /// The message as read: its JSON text for JSON streams, the chunk's
    /// bytes for byte streams (shares the read buffer; no copy).
    pub payload: Bytes,
}

impl<T> Message<T> {
    /// A message (for testing processors and batchers).
    pub fn new(data: T, position: Position, payload: Bytes) -> Self {
        Message {
            data,
            position,
            payload,
        }
    }

    /// The same message with other data (the position and payload stay).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Message<U> {
        Message {
            data: f(self.data),
            position: self.position,
            payload: self.payload,
        }
    }
}

/// What a processor did with a message.
#[derive(Debug)]
#[non_exhaustive]
pub enum Processed<T> {
    /// Finished: nothing more to do for this message.
    Done,
    /// Hand the message to the named batcher.
    Batch {
        /// The batcher's name (see [`PipelineBuilder::batcher`]).
        batcher: Cow<'static, str>,
        /// The message, possibly with transformed data.
        message: Message<T>,
    },
}

impl<T> Processed<T> {
    /// The message is finished.
    pub fn done() -> Self {
        Processed::Done
    }

    /// Send `message` to batcher `batcher`. An unknown name fails the message.
    pub fn batch(batcher: impl Into<Cow<'static, str>>, message: Message<T>) -> Self {
        Processed::Batch {
            batcher: batcher.into(),
            message,
        }
    }
}

/// Why a batch was handed to its batch function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchTrigger {
    /// It reached `batch_size`.
    Size,
    /// `batch_timeout` passed since its first message.
    Timeout,
    /// The pipeline is draining.
    Drain,
}

/// Facts about a batch, passed to the batch function.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BatchInfo {
    /// The batcher's name.
    pub batcher: Arc<str>,
    /// How many messages the batch holds.
    pub size: usize,
    /// Why it was flushed.
    pub trigger: BatchTrigger,
}

/// The stage where a message failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// A JSON message could not be decoded into the pipeline's type.
    Decode,
    /// The processor returned an error, panicked, or named an unknown batcher.
    Processor,
    /// The named batcher's batch function returned an error or panicked.
    Batcher(Arc<str>),
}

impl Stage {
    /// `decode`, `processor` or `batcher` (metric label).
    pub fn as_str(&self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Processor => "processor",
            Stage::Batcher(_) => "batcher",
        }
    }
}

/// A failed message, as handed to [`PipelineBuilder::on_failure`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Failure {
    /// Where the message came from.
    pub position: Position,
    /// The message as read.
    pub payload: Bytes,
    /// What went wrong.
    pub error: Error,
    /// Where it went wrong.
    pub stage: Stage,
}

/// One record of a dead-letter stream (a JSON message).
///
/// Read a dead-letter stream with `stream.read().json::<DeadLetter>()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The pipeline's name.
    pub pipeline: String,
    /// Where the read chunk holding the message starts in the source stream.
    pub offset: String,
    /// The offset right after that chunk.
    pub next_offset: String,
    /// The message's index within that chunk.
    pub index: usize,
    /// `decode`, `processor` or `batcher`.
    pub stage: String,
    /// The batcher's name when `stage` is `batcher`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batcher: Option<String>,
    /// The error's text.
    pub error: String,
    /// `json` (the payload is the message's JSON value) or `base64` (the
    /// payload is a base64 string of the bytes).
    pub encoding: String,
    /// The original message.
    pub payload: serde_json::Value,
}

impl DeadLetter {
    fn from_failure(pipeline: &str, json: bool, failure: &Failure) -> DeadLetter {
        let parsed = json
            .then(|| serde_json::from_slice::<serde_json::Value>(&failure.payload).ok())
            .flatten();
        let (encoding, payload) = match parsed {
            Some(value) => ("json", value),
            None => (
                "base64",
                serde_json::Value::String(
                    base64::engine::general_purpose::STANDARD.encode(&failure.payload),
                ),
            ),
        };
        DeadLetter {
            pipeline: pipeline.to_owned(),
            offset: failure.position.offset.to_string(),
            next_offset: failure.position.next_offset.to_string(),
            index: failure.position.index,
            stage: failure.stage.as_str().to_owned(),
            batcher: match &failure.stage {
                Stage::Batcher(name) => Some(name.to_string()),
                _ => None,
            },
            error: failure.error.to_string(),
            encoding: encoding.to_owned(),
            payload,
        }
    }

    /// The original payload's bytes (decoded from base64, or the JSON text).
    pub fn payload_bytes(&self) -> Result<Vec<u8>> {
        match (self.encoding.as_str(), &self.payload) {
            ("base64", serde_json::Value::String(s)) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| Error::decode(DecodeKind::Json, format!("bad base64 payload: {e}"))),
            _ => serde_json::to_vec(&self.payload)
                .map_err(|e| Error::decode(DecodeKind::Json, e.to_string())),
        }
    }
}

type Decoded<T> = Vec<(Result<T>, Bytes)>;
type DecodeFn<T> = Arc<dyn Fn(&mut Chunk) -> Result<Decoded<T>> + Send + Sync>;
type ProcessFn<T> =
    Arc<dyn Fn(Message<T>) -> BoxFuture<'static, Result<Processed<T>>> + Send + Sync>;
type KeyFn<T> = Arc<dyn Fn(&Message<T>) -> u64 + Send + Sync>;
type BatchFn<T> =
    Arc<dyn Fn(BatchInfo, Vec<Message<T>>) -> BoxFuture<'static, Result<()>> + Send + Sync>;
type FailureFn = Arc<dyn Fn(&Failure) + Send + Sync>;

struct BatcherSpec<T> {
    name: Arc<str>,
    batch_size: usize,
    batch_timeout: Duration,
    handler: BatchFn<T>,
}

enum DeadLetterTarget {
    Stream(Stream),
    Producer(Arc<Producer>),
}

/// Configures a [`Pipeline`]. Made by [`Pipeline::json`] or [`Pipeline::bytes`].
#[must_use]
pub struct PipelineBuilder<T> {
    reader: ReaderConfig,
    json: bool,
    decode: DecodeFn<T>,
    processors: usize,
    process: Option<ProcessFn<T>>,
    partition: Option<KeyFn<T>>,
    batchers: Vec<BatcherSpec<T>>,
    on_failure: Option<FailureFn>,
    dead_letter: Option<DeadLetterTarget>,
    max_in_flight_messages: usize,
    max_in_flight_bytes: usize,
    channel_capacity: usize,
}

impl<T> fmt::Debug for PipelineBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("stream", &self.reader.stream)
            .field("name", &self.reader.name)
            .field("start", &self.reader.start)
            .field("live", &self.reader.live)
            .field("json", &self.json)
            .field("processors", &self.processors)
            .field("partitioned", &self.partition.is_some())
            .field(
                "batchers",
                &self.batchers.iter().map(|b| &*b.name).collect::<Vec<_>>(),
            )
            .field("dead_letter", &self.dead_letter.is_some())
            .field("max_in_flight_messages", &self.max_in_flight_messages)
            .field("max_in_flight_bytes", &self.max_in_flight_bytes)
            .field("channel_capacity", &self.channel_capacity)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> PipelineBuilder<T> {
    fn new(stream: Stream, json: bool, decode: DecodeFn<T>) -> Self {
        PipelineBuilder {
            reader: ReaderConfig::new(stream, "pipeline"),
            json,
            decode,
            processors: 1,
            process: None,
            partition: None,
            batchers: Vec::new(),
            on_failure: None,
            dead_letter: None,
            max_in_flight_messages: DEFAULT_MAX_IN_FLIGHT_MESSAGES,
            max_in_flight_bytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
            channel_capacity: DEFAULT_CHANNEL_CAPACITY,
        }
    }

    /// The pipeline's name: its checkpoint key, dead-letter producer id
    /// prefix and telemetry label (default `"pipeline"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.reader.name = name.into();
        self
    }

    /// Where to start (default [`StartFrom::Checkpoint`]).
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.reader.start = start;
        self
    }

    /// How to read once caught up (default [`LiveMode::Auto`]). With
    /// [`LiveMode::Off`] the pipeline drains and stops at the tail with
    /// [`StopReason::CaughtUp`].
    pub fn live(mut self, live: LiveMode) -> Self {
        self.reader.live = live;
        self
    }

    /// Reconnect backoff and give-up limit for read errors (default
    /// [`default_retry_policy`](crate::consumer::default_retry_policy)).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.reader.retry = policy;
        self
    }

    /// Persist committed offsets here (default: none; the committed offset
    /// is only shown by [`PipelineHandle::offset`]).
    pub fn checkpoint_store(mut self, store: impl CheckpointStore) -> Self {
        self.reader.store = Some(Arc::new(store));
        self
    }

    /// How many processor workers run concurrently (default 1).
    pub fn processors(mut self, n: usize) -> Self {
        self.processors = n;
        self
    }

    /// The per-message function. A panic is caught and fails the message
    /// like an error. Default: send every message to the first batcher, or
    /// finish it when there is none.
    pub fn process<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Processed<T>>> + Send + 'static,
    {
        self.process = Some(Arc::new(move |m| Box::pin(f(m))));
        self
    }

    /// Partition messages by key: messages with equal keys go to the same
    /// processor and are processed one at a time in stream order. Without a
    /// key function any free processor takes the next message.
    pub fn partition_by<K, F>(mut self, key: F) -> Self
    where
        K: Hash,
        F: Fn(&Message<T>) -> K + Send + Sync + 'static,
    {
        self.partition = Some(Arc::new(move |m| {
            // `DefaultHasher::new` uses fixed keys: stable within a run.
            let mut h = std::hash::DefaultHasher::new();
            key(m).hash(&mut h);
            h.finish()
        }));
        self
    }

    /// Add a batcher named `name`: it collects up to `batch_size` messages,
    /// waiting at most `batch_timeout` after the first, and hands them to
    /// `handler` (one batch at a time per batcher). `Err` or a panic fails
    /// every message of the batch.
    pub fn batcher<F, Fut>(
        mut self,
        name: impl Into<String>,
        batch_size: usize,
        batch_timeout: Duration,
        handler: F,
    ) -> Self
    where
        F: Fn(BatchInfo, Vec<Message<T>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.batchers.push(BatcherSpec {
            name: Arc::from(name.into()),
            batch_size,
            batch_timeout,
            handler: Arc::new(move |info, batch| Box::pin(handler(info, batch))),
        });
        self
    }

    /// Called for every failed message (from a worker task; keep it short).
    /// A panic in the callback is caught and logged.
    pub fn on_failure(mut self, f: impl Fn(&Failure) + Send + Sync + 'static) -> Self {
        self.on_failure = Some(Arc::new(f));
        self
    }

    /// Write failed messages to this JSON stream (which must exist) as
    /// [`DeadLetter`] records, through an idempotent [`Producer`] with id
    /// `"{name}-dead-letters"`, an epoch taken from the clock (so each run
    /// has a higher one) and `auto_claim`.
    pub fn dead_letter_stream(mut self, stream: Stream) -> Self {
        self.dead_letter = Some(DeadLetterTarget::Stream(stream));
        self
    }

    /// Write dead letters through this producer (for full control over its
    /// id, epoch and batching). It is flushed, not closed, when the pipeline stops.
    pub fn dead_letter_producer(mut self, producer: Arc<Producer>) -> Self {
        self.dead_letter = Some(DeadLetterTarget::Producer(producer));
        self
    }

    /// Bound on messages read but not yet acknowledged (default
    /// [`DEFAULT_MAX_IN_FLIGHT_MESSAGES`]).
    pub fn max_in_flight_messages(mut self, n: usize) -> Self {
        self.max_in_flight_messages = n;
        self
    }

    /// Bound on bytes read but not yet acknowledged (default
    /// [`DEFAULT_MAX_IN_FLIGHT_BYTES`]). A larger single chunk is let through
    /// alone. Reads deliver large responses in pieces of at most 1 MiB.
    pub fn max_in_flight_bytes(mut self, n: usize) -> Self {
        self.max_in_flight_bytes = n;
        self
    }

    /// Capacity of each processor's and each batcher's input channel
    /// (default [`DEFAULT_CHANNEL_CAPACITY`]).
    pub fn channel_capacity(mut self, n: usize) -> Self {
        self.channel_capacity = n;
        self
    }

    /// Check the configuration. Errors are `InvalidArgument` naming the
    /// field: `name`, `processors`, `batch_size`, `batch_timeout`,
    /// `batcher` (empty or duplicate name), `max_in_flight_messages`,
    /// `max_in_flight_bytes`, `channel_capacity`, or the retry policy's.
    pub fn build(self) -> Result<Pipeline<T>> {
        self.reader.validate("pipeline")?;
        if self.processors == 0 {
            return Err(Error::invalid_argument(
                "processors",
                "a pipeline needs at least one processor",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for b in &self.batchers {
            if b.name.is_empty() {
                return Err(Error::invalid_argument(
                    "batcher",
                    "batcher name must not be empty",
                ));
            }
            if !names.insert(Arc::clone(&b.name)) {
                return Err(Error::invalid_argument(
                    "batcher",
                    format!("batcher `{}` is defined twice", b.name),
                ));
            }
            if b.batch_size == 0 {
                return Err(Error::invalid_argument(
                    "batch_size",
                    format!("batcher `{}`: batch_size must be greater than 0", b.name),
                ));
            }
            if b.batch_timeout.is_zero() {
                return Err(Error::invalid_argument(
                    "batch_timeout",
                    format!("batcher `{}`: batch_timeout must be greater than 0", b.name),
                ));
            }
        }
        let max_permits = Semaphore::MAX_PERMITS.min(u32::MAX as usize);
        if self.max_in_flight_messages == 0 || self.max_in_flight_messages > max_permits {
            return Err(Error::invalid_argument(
                "max_in_flight_messages",
                "max_in_flight_messages must be between 1 and 2^32-1",
            ));
        }
        if self.max_in_flight_bytes == 0 || self.max_in_flight_bytes > max_permits {
            return Err(Error::invalid_argument(
                "max_in_flight_bytes",
                "max_in_flight_bytes must be between 1 and 2^32-1",
            ));
        }
        if self.channel_capacity == 0 {
            return Err(Error::invalid_argument(
                "channel_capacity",
                "channel_capacity must be greater than 0",
            ));
        }
        Ok(Pipeline { config: self })
    }
}

/// A configured pipeline, ready to [`spawn`](Pipeline::spawn) or
/// [`run`](Pipeline::run). See the [module docs](self).
pub struct Pipeline<T> {
    config: PipelineBuilder<T>,
}

impl<T> fmt::Debug for Pipeline<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("config", &self.config)
            .finish()
    }
}

impl Pipeline<()> {
    /// A pipeline over a JSON stream: one [`Message`] per JSON message,
    /// deserialized into `T`. A message that does not match `T` fails alone
    /// (stage [`Stage::Decode`]).
    pub fn json<T: DeserializeOwned + Send + 'static>(stream: Stream) -> PipelineBuilder<T> {
        PipelineBuilder::new(stream, true, Arc::new(decode_json::<T>))
    }

    /// A pipeline over a byte stream: one [`Message`] per read chunk, as the
    /// server delivered it.
    pub fn bytes(stream: Stream) -> PipelineBuilder<Bytes> {
        PipelineBuilder::new(
            stream,
            false,
            Arc::new(|chunk: &mut Chunk| {
                let data = &chunk.data;
                Ok(if data.is_empty() {
                    Vec::new()
                } else {
                    vec![(Ok(data.clone()), data.clone())]
                })
            }),
        )
    }
}

fn decode_json<T: DeserializeOwned>(chunk: &mut Chunk) -> Result<Decoded<T>> {
    Ok(chunk
        .take_json_messages()?
        .into_iter()
        .map(|raw| (crate::json::decode_message(&raw), raw))
        .collect())
}

impl<T: Send + 'static> Pipeline<T> {
    /// Run the pipeline on a new tokio task. Must be called inside a tokio
    /// runtime.
    pub fn spawn(self) -> PipelineHandle {
        let name = self.config.reader.name.clone();
        PipelineHandle(TaskHandle::spawn(
            "the pipeline task",
            &name,
            None,
            OnDrop::Abort,
            |token, tx| self.run_with(token, tx),
        ))
    }

    /// Run the pipeline in the current task until it stops; cancelling
    /// `shutdown` drains it like [`PipelineHandle::shutdown`]. Dropping the
    /// future aborts every task of the pipeline (nothing more is committed).
    pub fn run(
        self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<StopReason>> + Send + 'static {
        let (tx, _rx) = watch::channel(None);
        self.run_with(shutdown, tx)
    }

    fn run_with(
        self,
        token: CancellationToken,
        committed: watch::Sender<Option<Offset>>,
    ) -> impl Future<Output = Result<StopReason>> + Send + 'static {
        let span = tracing::info_span!(
            "durable_streams.pipeline",
            pipeline = %self.config.reader.name,
            path = %self.config.reader.stream.url().path(),
        );
        run(self.config, token, committed).instrument(span)
    }
}

/// Controls a spawned pipeline. `Send + Sync`.
///
/// Dropping the handle **aborts** the pipeline (in-flight messages are not
/// committed and will be processed again); use
/// [`shutdown`](PipelineHandle::shutdown) to drain or
/// [`detach`](PipelineHandle::detach) to let it run on its own.
pub struct PipelineHandle(TaskHandle<StopReason>);

impl fmt::Debug for PipelineHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.debug("PipelineHandle", f)
    }
}

impl PipelineHandle {
    /// The pipeline's name.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// The last committed offset (loaded from the checkpoint store at start,
    /// or saved since); `None` before either.
    pub fn offset(&self) -> Option<Offset> {
        self.0.progress()
    }

    /// A receiver that sees every committed offset.
    pub fn subscribe(&self) -> watch::Receiver<Option<Offset>> {
        self.0.subscribe()
    }

    /// Whether the pipeline has stopped.
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Ask the pipeline to drain and stop without waiting.
    pub fn request_shutdown(&self) {
        self.0.request_shutdown();
    }

    /// Drain and wait: stop reading, finish every message already read,
    /// flush the batchers, commit. Returns why it stopped.
    pub async fn shutdown(self) -> Result<StopReason> {
        self.0.shutdown().await
    }

    /// Wait until the pipeline stops on its own (end of a non-live read,
    /// closed stream, a fatal error, or a shutdown request).
    pub async fn join(self) -> Result<StopReason> {
        self.0.join().await
    }

    /// Kill the pipeline immediately (nothing more is committed).
    pub fn abort(self) {
        self.0.abort();
    }

    /// Let the pipeline run without a handle.
    pub fn detach(self) {
        self.0.detach();
    }
}

// ---------------------------------------------------------------------------
// Running

/// Read-ahead window permits held by a chunk until it is acknowledged.
type Hold = Option<(OwnedSemaphorePermit, Option<OwnedSemaphorePermit>)>;

struct Envelope<T> {
    seq: u64,
    message: Message<T>,
}

/// State shared by the reader, the workers and the batchers.
struct Shared {
    name: Arc<str>,
    json: bool,
    tracker: Mutex<AckTracker<Hold>>,
    /// The latest offset whose chunks are all done (for the committer).
    ackable: watch::Sender<Option<Offset>>,
    on_failure: Option<FailureFn>,
    dead_letters: Option<Arc<Producer>>,
    /// Cancelled on a fatal error: the reader stops, the rest drains.
    stop: CancellationToken,
    fatal: Mutex<Option<Error>>,
}

impl Shared {
    fn complete(&self, seq: u64, n: usize) {
        let advance = self
            .tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .complete(seq, n);
        if let Some(advance) = advance {
            self.advanced(advance);
        }
    }

    fn complete_all(&self, seqs: &[u64]) {
        let mut last: Option<ack::Advance> = None;
        {
            let mut tracker = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
            for &seq in seqs {
                if let Some(a) = tracker.complete(seq, 1) {
                    let merged = match last.take() {
                        None => a,
                        Some(prev) => ack::Advance {
                            offset: a.offset.or(prev.offset),
                            chunks: prev.chunks + a.chunks,
                            messages: prev.messages + a.messages,
                        },
                    };
                    last = Some(merged);
                }
            }
        }
        if let Some(a) = last {
            self.advanced(a);
        }
    }

    fn advanced(&self, advance: ack::Advance) {
        crate::telemetry::pipeline_acked(&self.name, advance.chunks, advance.messages);
        if let Some(offset) = advance.offset {
            self.ackable.send_replace(Some(offset));
        }
    }

    fn set_fatal(&self, error: Error) {
        tracing::error!(%error, "pipeline stopping after a fatal error");
        let mut fatal = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        fatal.get_or_insert(error);
        self.stop.cancel();
    }

    /// Report a failed message; it counts as done once dead-lettered.
    async fn fail(&self, seq: u64, failure: Failure) {
        self.fail_all(vec![(seq, failure)]).await;
    }

    /// Report failed messages; each counts as done once dead-lettered. All
    /// dead letters are queued before any receipt is awaited, so a failed
    /// batch costs about one round trip, not one per message.
    async fn fail_all(&self, failures: Vec<(u64, Failure)>) {
        for (_, failure) in &failures {
            crate::telemetry::pipeline_failure(&self.name, failure);
            if let Some(callback) = &self.on_failure {
                let call = std::panic::AssertUnwindSafe(|| callback(failure));
                if std::panic::catch_unwind(call).is_err() {
                    tracing::error!("pipeline on_failure callback panicked");
                }
            }
        }
        let Some(producer) = &self.dead_letters else {
            let seqs: Vec<u64> = failures.iter().map(|(seq, _)| *seq).collect();
            self.complete_all(&seqs);
            return;
        };
        let mut pending = Vec::with_capacity(failures.len());
        for (seq, failure) in failures {
            let record = DeadLetter::from_failure(&self.name, self.json, &failure);
            let ack = producer.send_json(&record).await;
            pending.push((seq, failure, ack));
        }
        let mut written = Vec::with_capacity(pending.len());
        for (seq, failure, ack) in pending {
            let receipt = match ack {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match receipt {
                Ok(receipt) => {
                    crate::telemetry::pipeline_dead_letter(
                        &self.name,
                        &failure.position.offset,
                        receipt.offset.as_ref(),
                    );
                    written.push(seq);
                }
                Err(e) => self.set_fatal(
                    Error::new(e.kind().clone())
                        .with_message(format!(
                            "could not write a dead letter for the message at {} #{}: {e}",
                            failure.position.offset, failure.position.index
                        ))
                        .with_source(e),
                ),
            }
        }
        self.complete_all(&written);
    }
}

async fn run<T: Send + 'static>(
    c: PipelineBuilder<T>,
    token: CancellationToken,
    committed: watch::Sender<Option<Offset>>,
) -> Result<StopReason> {
    let stop = token.child_token();
    let Some(start) = c.reader.start_offset(&stop, &committed).await? else {
        return Ok(StopReason::Shutdown);
    };
    let (dead_letters, own_producer) = match c.dead_letter {
        None => (None, false),
        Some(DeadLetterTarget::Producer(p)) => (Some(p), false),
        Some(DeadLetterTarget::Stream(s)) => {
            // The default epoch comes from the clock: each run is newer.
            let producer = Producer::builder(&s, format!("{}-dead-letters", c.reader.name))
                .auto_claim(true)
                .content_type(JSON_CONTENT_TYPE)
                .linger(Duration::from_millis(1))
                .build()?;
            (Some(Arc::new(producer)), true)
        }
    };
    let (ackable_tx, ackable_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        name: Arc::from(c.reader.name.as_str()),
        json: c.json,
        tracker: Mutex::new(AckTracker::default()),
        ackable: ackable_tx,
        on_failure: c.on_failure,
        dead_letters: dead_letters.clone(),
        stop: stop.clone(),
        fatal: Mutex::new(None),
    });

    // Every task lives in a JoinSet owned by this future: dropping the
    // future (abort) aborts them all.
    let mut committer_set = JoinSet::new();
    committer_set.spawn(
        commit_loop(
            ackable_rx,
            c.reader.store.clone(),
            Arc::clone(&shared.name),
            committed,
        )
        .in_current_span(),
    );

    let mut batcher_set = JoinSet::new();
    let mut batcher_txs = Vec::with_capacity(c.batchers.len());
    let mut batcher_index = HashMap::new();
    for (i, spec) in c.batchers.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel(c.channel_capacity.max(spec.batch_size.min(1024)));
        batcher_index.insert(Arc::clone(&spec.name), i);
        batcher_txs.push(tx);
        batcher_set.spawn(batch_loop(spec, rx, Arc::clone(&shared)).in_current_span());
    }
    let routing = Arc::new(Routing {
        index: batcher_index,
        txs: batcher_txs,
    });

    let process: ProcessFn<T> = match c.process {
        Some(p) => p,
        None => {
            let first = routing
                .index
                .iter()
                .find(|(_, i)| **i == 0)
                .map(|(name, _)| Cow::<'static, str>::Owned(name.to_string()));
            Arc::new(move |m| {
                let out = match &first {
                    Some(name) => Processed::batch(name.clone(), m),
                    None => Processed::Done,
                };
                Box::pin(async move { Ok(out) })
            })
        }
    };

    let mut worker_set = JoinSet::new();
    let dispatch = if c.partition.is_some() {
        let mut txs = Vec::with_capacity(c.processors);
        for _ in 0..c.processors {
            let (tx, rx) = mpsc::channel::<Envelope<T>>(c.channel_capacity);
            txs.push(tx);
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            worker_set.spawn(
                worker(
                    rx,
                    Arc::clone(&process),
                    Arc::clone(&routing),
                    Arc::clone(&shared),
                )
                .in_current_span(),
            );
        }
        Dispatch::Partitioned(txs)
    } else {
        let (tx, rx) = mpsc::channel::<Envelope<T>>(c.channel_capacity);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..c.processors {
            worker_set.spawn(
                worker(
                    Arc::clone(&rx),
                    Arc::clone(&process),
                    Arc::clone(&routing),
                    Arc::clone(&shared),
                )
                .in_current_span(),
            );
        }
        Dispatch::Shared(tx)
    };
    drop(routing);

    let reader = Reader {
        stream: c.reader.stream,
        live: c.reader.live,
        json: c.json,
        retry: c.reader.retry,
        decode: c.decode,
        partition: c.partition,
        dispatch,
        shared: Arc::clone(&shared),
        messages: Arc::new(Semaphore::new(c.max_in_flight_messages)),
        max_messages: c.max_in_flight_messages,
        bytes: Arc::new(Semaphore::new(c.max_in_flight_bytes)),
        max_bytes: c.max_in_flight_bytes,
    };
    let read_result = reader.run(start, &stop).await;
    tracing::debug!(result = ?read_result, "pipeline reader stopped; draining");

    // Drain: the reader dropped the processor channels; workers finish and
    // drop the batcher channels; batchers flush and end.
    let mut task_error = None;
    for set in [&mut worker_set, &mut batcher_set] {
        while let Some(joined) = set.join_next().await {
            if let Err(e) = joined {
                task_error.get_or_insert(join_error("a pipeline task", e));
            }
        }
    }
    if let Some(producer) = &dead_letters {
        let flushed = if own_producer {
            producer.close().await
        } else {
            producer.flush().await
        };
        if let Err(e) = flushed {
            tracing::warn!(error = %e, "flushing the dead-letter producer failed");
        }
    }
    // Dropping the last sender of `ackable` ends the committer after a
    // final commit.
    let fatal = shared
        .fatal
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    drop(shared);
    let mut commit_result = Ok(());
    while let Some(joined) = committer_set.join_next().await {
        commit_result = match joined {
            Ok(r) => r,
            Err(e) => Err(Error::new(ErrorKind::Checkpoint)
                .with_message(format!("the pipeline committer ended abnormally: {e}"))),
        };
    }
    if let Some(error) = fatal {
        return Err(error);
    }
    if let Some(error) = task_error {
        return Err(error);
    }
    let reason = read_result?;
    commit_result?;
    Ok(reason)
}

/// Save each new ackable offset (coalescing bursts), and once more at the end.
async fn commit_loop(
    mut ackable: watch::Receiver<Option<Offset>>,
    store: Option<Arc<dyn DynCheckpointStore>>,
    name: Arc<str>,
    committed: watch::Sender<Option<Offset>>,
) -> Result<()> {
    let mut last_error = None;
    loop {
        let ended = ackable.changed().await.is_err();
        let Some(offset) = ackable.borrow_and_update().clone() else {
            if ended {
                break;
            }
            continue;
        };
        // Checkpoints only move forward.
        if crate::read::checkpoint_moves(committed.borrow().as_ref(), &offset) {
            let saved = match &store {
                Some(store) => store.save_boxed(&name, &offset).await,
                None => Ok(()),
            };
            match saved {
                Ok(()) => {
                    last_error = None;
                    crate::telemetry::pipeline_checkpoint(&name, &offset);
                    committed.send_replace(Some(offset));
                }
                Err(e) => {
                    tracing::warn!(error = %e, %offset, "pipeline checkpoint save failed; will retry on the next advance");
                    last_error = Some(e);
                }
            }
        }
        if ended {
            break;
        }
    }
    match last_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct Routing<T> {
    index: HashMap<Arc<str>, usize>,
    txs: Vec<mpsc::Sender<Envelope<T>>>,
}

enum Dispatch<T> {
    Shared(mpsc::Sender<Envelope<T>>),
    Partitioned(Vec<mpsc::Sender<Envelope<T>>>),
}

async fn worker<T: Send + 'static>(
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Envelope<T>>>>,
    process: ProcessFn<T>,
    routing: Arc<Routing<T>>,
    shared: Arc<Shared>,
) {
    loop {
        let next = rx.lock().await.recv().await;
        let Some(Envelope { seq, message }) = next else {
            return;
        };
        let position = message.position.clone();
        let payload = message.payload.clone();
        let outcome = guard("process", process(message)).await.and_then(|r| r);
        let error = match outcome {
            Ok(Processed::Done) => {
                shared.complete(seq, 1);
                continue;
            }
            Ok(Processed::Batch { batcher, message }) => match routing.index.get(&*batcher) {
                Some(&i) => {
                    if routing.txs[i]
                        .send(Envelope { seq, message })
                        .await
                        .is_err()
                    {
                        shared.set_fatal(internal(format!("batcher `{batcher}` is gone")));
                    }
                    continue;
                }
                None => Error::invalid_argument("batcher", format!("no batcher named `{batcher}`")),
            },
            Err(e) => e,
        };
        shared
            .fail(
                seq,
                Failure {
                    position,
                    payload,
                    error,
                    stage: Stage::Processor,
                },
            )
            .await;
    }
}

async fn batch_loop<T: Send + 'static>(
    spec: BatcherSpec<T>,
    mut rx: mpsc::Receiver<Envelope<T>>,
    shared: Arc<Shared>,
) {
    let mut pending: Vec<Envelope<T>> = Vec::with_capacity(spec.batch_size.min(4096));
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let trigger = tokio::select! {
            next = rx.recv() => match next {
                Some(envelope) => {
                    if pending.is_empty() {
                        deadline = Some(tokio::time::Instant::now() + spec.batch_timeout);
                    }
                    pending.push(envelope);
                    if pending.len() < spec.batch_size {
                        continue;
                    }
                    BatchTrigger::Size
                }
                None => {
                    if !pending.is_empty() {
                        flush(&spec, std::mem::take(&mut pending), BatchTrigger::Drain, &shared).await;
                    }
                    return;
                }
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => BatchTrigger::Timeout,
        };
        deadline = None;
        let batch = std::mem::replace(&mut pending, Vec::with_capacity(spec.batch_size.min(4096)));
        flush(&spec, batch, trigger, &shared).await;
    }
}

async fn flush<T: Send + 'static>(
    spec: &BatcherSpec<T>,
    batch: Vec<Envelope<T>>,
    trigger: BatchTrigger,
    shared: &Shared,
) {
    let size = batch.len();
    let mut seqs = Vec::with_capacity(size);
    let mut keep = Vec::with_capacity(size);
    let mut messages = Vec::with_capacity(size);
    for Envelope { seq, message } in batch {
        seqs.push(seq);
        keep.push((message.position.clone(), message.payload.clone()));
        messages.push(message);
    }
    let info = BatchInfo {
        batcher: Arc::clone(&spec.name),
        size,
        trigger,
    };
    let started = Instant::now();
    let result = guard("batch", (spec.handler)(info, messages))
        .await
        .and_then(|r| r);
    crate::telemetry::pipeline_batch(&shared.name, &spec.name, size, started.elapsed());
    match result {
        Ok(()) => shared.complete_all(&seqs),
        Err(error) => {
            let stage = Stage::Batcher(Arc::clone(&spec.name));
            let failures = seqs
                .into_iter()
                .zip(keep)
                .map(|(seq, (position, payload))| {
                    let failure = Failure {
                        position,
                        payload,
                        error: error.clone(),
                        stage: stage.clone(),
                    };
                    (seq, failure)
                })
                .collect();
            shared.fail_all(failures).await;
        }
    }
}

struct Reader<T> {
    stream: Stream,
    live: LiveMode,
    json: bool,
    retry: RetryPolicy,
    decode: DecodeFn<T>,
    partition: Option<KeyFn<T>>,
    dispatch: Dispatch<T>,
    shared: Arc<Shared>,
    messages: Arc<Semaphore>,
    max_messages: usize,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
}

impl<T: Send + 'static> Reader<T> {
    async fn run(self, start: Offset, stop: &CancellationToken) -> Result<StopReason> {
        let mut position = start;
        // One budget for the reader's reconnects, reset by progress.
        let mut backoff = Backoff::new(&self.retry);
        loop {
            let mut session =
                Session::new(self.stream.clone(), position.clone(), self.live, self.json);
            let error = loop {
                let next = tokio::select! {
                    biased;
                    _ = stop.cancelled() => return Ok(StopReason::Shutdown),
                    next = session.next_chunk() => next,
                };
                let chunk = match next {
                    None => return Ok(StopReason::CaughtUp),
                    Some(Err(e)) => break e,
                    Some(Ok(chunk)) => chunk,
                };
                backoff.reset();
                let closed = chunk.closed;
                // Reconnects resume from the last exact position (a piece of
                // a large response carries where the response started).
                let chunk_start = position.clone();
                if chunk.exact && crate::read::checkpoint_moves(Some(&position), &chunk.offset) {
                    position = chunk.offset.clone();
                }
                match self.dispatch(chunk, chunk_start, stop).await {
                    Ok(true) => {}
                    Ok(false) => return Ok(StopReason::Shutdown),
                    Err(e) => return Err(e),
                }
                if closed {
                    return Ok(StopReason::Closed);
                }
            };
            let delay = if error.is_retryable() {
                backoff.next_delay(error.retry_after())
            } else {
                None
            };
            let Some(delay) = delay else {
                tracing::warn!(%error, attempts = backoff.retries(), "pipeline reader stopped by an error");
                return Err(error);
            };
            let attempt = backoff.retries();
            crate::telemetry::pipeline_reconnect(&self.shared.name, &error, attempt, delay);
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(StopReason::Shutdown),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Register one chunk and hand its messages to the processors. `false`
    /// when stopped while waiting for window room (nothing registered).
    async fn dispatch(
        &self,
        chunk: Chunk,
        chunk_start: Offset,
        stop: &CancellationToken,
    ) -> Result<bool> {
        let mut chunk = chunk;
        let items = (self.decode)(&mut chunk).map_err(|e| e.with_url(self.stream.url()))?;
        let count = items.len();
        let bytes = chunk.data.len();
        drop(chunk.data);
        let hold = if count == 0 {
            None
        } else {
            let want_messages = count.min(self.max_messages) as u32;
            let want_bytes = bytes.min(self.max_bytes) as u32;
            let acquire = async {
                let m = Arc::clone(&self.messages)
                    .acquire_many_owned(want_messages)
                    .await;
                let b = if want_bytes == 0 {
                    None
                } else {
                    Some(Arc::clone(&self.bytes).acquire_many_owned(want_bytes).await)
                };
                (m, b)
            };
            let (m, b) = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(false),
                permits = acquire => permits,
            };
            let closed = || internal("pipeline window closed");
            Some((
                m.map_err(|_| closed())?,
                b.transpose().map_err(|_| closed())?,
            ))
        };
        let (seq, advance) = {
            let mut tracker = self
                .shared
                .tracker
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            tracker.register(count, chunk.offset.clone(), chunk.exact, hold)
        };
        if let Some(advance) = advance {
            self.shared.advanced(advance);
        }
        for (index, (data, payload)) in items.into_iter().enumerate() {
            let position = Position {
                offset: chunk_start.clone(),
                next_offset: chunk.offset.clone(),
                index,
            };
            let data = match data {
                Ok(data) => data,
                Err(error) => {
                    self.shared
                        .fail(
                            seq,
                            Failure {
                                position,
                                payload,
                                error: error.with_url(self.stream.url()),
                                stage: Stage::Decode,
                            },
                        )
                        .await;
                    continue;
                }
            };
            let envelope = Envelope {
                seq,
                message: Message {
                    data,
                    position,
                    payload,
                },
            };
            let sent = match &self.dispatch {
                Dispatch::Shared(tx) => tx.send(envelope).await,
                Dispatch::Partitioned(txs) => {
                    let key = (self.partition.as_ref().expect("partitioned"))(&envelope.message);
                    txs[(key % txs.len() as u64) as usize].send(envelope).await
                }
            };
            if sent.is_err() {
                return Err(internal("pipeline processors are gone"));
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
