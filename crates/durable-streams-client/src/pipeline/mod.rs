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
//!   their partial batches), commits the checkpoint and returns;
//!   [`PipelineHandle::shutdown_on_ctrl_c`] does so on ctrl-c.
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
//! let handle = Pipeline::json::<Event>(&stream)
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
//!     .dead_letter_stream(&client.stream("http://127.0.0.1:4437/v1/stream/events-dlq")?)
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
mod builder;
mod dead_letter;
mod reader;
mod run;
mod stages;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use self::builder::PipelineBuilder;
pub use self::dead_letter::DeadLetter;
use crate::consumer::StopReason;
use crate::error::{Error, Result};
use crate::offset::Offset;
use crate::runtime::{OnDrop, TaskHandle};
#[cfg(doc)]
use crate::{
    consumer::{CheckpointStore, StartFrom},
    producer::Producer,
    read::LiveMode,
    retry::RetryPolicy,
};
#[cfg(test)]
use {
    self::ack::AckTracker,
    self::builder::{BatcherSpec, decode_json},
    self::run::Shared,
    self::stages::{Envelope, batch_loop},
    crate::error::ErrorKind,
    crate::read::Chunk,
    crate::stream::Stream,
    std::sync::Mutex,
    std::time::Duration,
    tokio::sync::mpsc,
};

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
        run::run(self.config, token, committed).instrument(span)
    }
}

/// Controls a spawned pipeline. `Send + Sync`.
///
/// Dropping the handle **aborts** the pipeline (in-flight messages are not
/// committed and will be processed again); use
/// [`shutdown`](PipelineHandle::shutdown) to drain or
/// [`detach`](PipelineHandle::detach) to let it run on its own.
pub struct PipelineHandle(TaskHandle<StopReason>);

crate::runtime::reader_handle! {
    PipelineHandle -> StopReason;
    /// The pipeline's name.
    name;
    /// The last committed offset (loaded from the checkpoint store at start,
    /// or saved since); `None` before either.
    offset;
    /// A receiver that sees every committed offset.
    subscribe;
    /// Whether the pipeline has stopped.
    is_finished;
    /// Ask the pipeline to drain and stop without waiting.
    request_shutdown;
    /// Drain and wait: stop reading, finish every message already read,
    /// flush the batchers, commit. Returns why it stopped.
    shutdown;
    /// Run until `signal` resolves, then drain and wait like
    /// [`shutdown`](PipelineHandle::shutdown); if the pipeline stops on its
    /// own first, return like [`join`](PipelineHandle::join). Any future
    /// serves as the signal: a `CancellationToken::cancelled()`, a oneshot
    /// receiver, a timer, or [`tokio::signal::ctrl_c`] (see
    /// [`shutdown_on_ctrl_c`](PipelineHandle::shutdown_on_ctrl_c)).
    /// Dropping the returned future aborts the pipeline, like dropping the
    /// handle.
    shutdown_on;
    /// Run until ctrl-c (SIGINT), then drain and wait like
    /// [`shutdown`](PipelineHandle::shutdown): what a pipeline alone in a
    /// program needs to stop without reprocessing. If it stops on its own
    /// first, returns like [`join`](PipelineHandle::join).
    ///
    /// From the first call on, ctrl-c no longer ends the process by itself
    /// (tokio replaces the default handler for the life of the process),
    /// so a second ctrl-c does not cut a long drain short; bound the drain
    /// with [`shutdown_on`](PipelineHandle::shutdown_on) and your own
    /// signal handling if you need that. Several pipelines or consumers
    /// under one ctrl-c belong in a [`supervisor`](crate::supervisor) with
    /// [`stop_on_ctrl_c`](crate::supervisor::SupervisorBuilder::stop_on_ctrl_c).
    ///
    /// ```no_run
    /// use durable_streams_client::pipeline::{Message, Pipeline, Processed};
    /// use durable_streams_client::{Client, Result};
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<()> {
    ///     let stream = Client::new().stream("http://127.0.0.1:4437/v1/stream/events")?;
    ///     let handle = Pipeline::json::<serde_json::Value>(&stream)
    ///         .name("events")
    ///         .process(|m: Message<serde_json::Value>| async move {
    ///             println!("{}", m.data);
    ///             Ok(Processed::done())
    ///         })
    ///         .build()?
    ///         .spawn();
    ///     let reason = handle.shutdown_on_ctrl_c().await?;
    ///     println!("stopped: {reason:?}");
    ///     Ok(())
    /// }
    /// ```
    shutdown_on_ctrl_c;
    /// Wait until the pipeline stops on its own (end of a non-live read,
    /// closed stream, a fatal error, or a shutdown request).
    join;
    /// Kill the pipeline immediately (nothing more is committed).
    abort;
    /// Let the pipeline run without a handle.
    detach;
}

#[cfg(test)]
mod tests;
