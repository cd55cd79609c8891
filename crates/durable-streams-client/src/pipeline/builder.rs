//! [`PipelineBuilder`]: the pipeline's configuration, its validation, and
//! the entry points [`Pipeline::json`] and [`Pipeline::bytes`].

use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use super::{
    BatchInfo, DEFAULT_CHANNEL_CAPACITY, DEFAULT_MAX_IN_FLIGHT_BYTES,
    DEFAULT_MAX_IN_FLIGHT_MESSAGES, Failure, Message, Pipeline, Processed,
};
#[cfg(doc)]
use super::{DeadLetter, PipelineHandle, Stage};
use crate::codec::{Codec, Framed};
#[cfg(doc)]
use crate::consumer::{CheckpointStore, StartFrom};
#[cfg(doc)]
use crate::consumer::{StopReason, default_retry_policy};
use crate::error::{Error, Result};
use crate::offset::Offset;
use crate::producer::Producer;
use crate::read::Chunk;
use crate::runtime::ReaderConfig;
use crate::stream::Stream;
#[cfg(doc)]
use crate::{read::LiveMode, retry::RetryPolicy};

pub(super) type Decoded<T> = Vec<(Result<T>, Bytes)>;
/// Decodes the chunks of one read session in order (a framed decoder
/// carries partial frames between them and marks such chunks inexact).
pub(super) type ChunkDecoder<T> = Box<dyn FnMut(&mut Chunk) -> Result<Decoded<T>> + Send>;
/// Makes a [`ChunkDecoder`] for a session starting at the given offset.
pub(super) type DecodeFn<T> = Arc<dyn Fn(&Offset) -> ChunkDecoder<T> + Send + Sync>;
pub(super) type ProcessFn<T> =
    Arc<dyn Fn(Message<T>) -> BoxFuture<'static, Result<Processed<T>>> + Send + Sync>;
pub(super) type KeyFn<T> = Arc<dyn Fn(&Message<T>) -> u64 + Send + Sync>;
pub(super) type BatchFn<T> =
    Arc<dyn Fn(BatchInfo, Vec<Message<T>>) -> BoxFuture<'static, Result<()>> + Send + Sync>;
pub(super) type FailureFn = Arc<dyn Fn(&Failure) + Send + Sync>;

pub(super) struct BatcherSpec<T> {
    pub(super) name: Arc<str>,
    pub(super) batch_size: usize,
    pub(super) batch_timeout: Duration,
    pub(super) batch_fn: BatchFn<T>,
}

pub(super) enum DeadLetterTarget {
    Stream(Stream),
    Producer(Arc<Producer>),
}

/// Configures a [`Pipeline`]. Made by [`Pipeline::json`] or [`Pipeline::bytes`].
#[must_use]
pub struct PipelineBuilder<T> {
    pub(super) reader: ReaderConfig,
    pub(super) json: bool,
    pub(super) decode: DecodeFn<T>,
    pub(super) processors: usize,
    pub(super) process: Option<ProcessFn<T>>,
    pub(super) partition: Option<KeyFn<T>>,
    pub(super) batchers: Vec<BatcherSpec<T>>,
    pub(super) on_failure: Option<FailureFn>,
    pub(super) dead_letter: Option<DeadLetterTarget>,
    pub(super) max_in_flight_messages: usize,
    pub(super) max_in_flight_bytes: usize,
    pub(super) channel_capacity: usize,
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
    pub(super) fn new(stream: Stream, json: bool, decode: DecodeFn<T>) -> Self {
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

    crate::runtime::reader_setters! {
        /// The pipeline's name: its checkpoint key, dead-letter producer id
        /// prefix and telemetry label (default `"pipeline"`).
        name;
        /// Where to start (default [`StartFrom::Checkpoint`]).
        start_from;
        /// How to read once caught up (default [`LiveMode::Auto`]). With
        /// [`LiveMode::Off`] the pipeline drains and stops at the tail with
        /// [`StopReason::CaughtUp`].
        live;
        /// Reconnect backoff and give-up limit for read errors (default
        /// [`default_retry_policy`]).
        retry_policy;
        /// Persist committed offsets here (default: none; the committed offset
        /// is only shown by [`PipelineHandle::offset`]).
        checkpoint_store;
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
            batch_fn: Arc::new(move |info, batch| Box::pin(handler(info, batch))),
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
    pub fn dead_letter_stream(mut self, stream: &Stream) -> Self {
        self.dead_letter = Some(DeadLetterTarget::Stream(stream.clone()));
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

impl Pipeline<()> {
    /// A pipeline over a JSON stream: one [`Message`] per JSON message,
    /// deserialized into `T`. A message that does not match `T` fails alone
    /// (stage [`Stage::Decode`]).
    pub fn json<T: DeserializeOwned + Send + 'static>(stream: &Stream) -> PipelineBuilder<T> {
        PipelineBuilder::new(
            stream.clone(),
            true,
            Arc::new(|_: &Offset| Box::new(decode_json::<T>) as ChunkDecoder<T>),
        )
    }

    /// A pipeline over a byte stream: one [`Message`] per read chunk, as the
    /// server delivered it.
    pub fn bytes(stream: &Stream) -> PipelineBuilder<Bytes> {
        PipelineBuilder::new(
            stream.clone(),
            false,
            Arc::new(|_: &Offset| {
                Box::new(|chunk: &mut Chunk| {
                    let data = &chunk.data;
                    Ok(if data.is_empty() {
                        Vec::new()
                    } else {
                        vec![(Ok(data.clone()), data.clone())]
                    })
                }) as ChunkDecoder<Bytes>
            }),
        )
    }

    /// A pipeline over a framed binary stream ([`codec`](crate::codec)): one
    /// [`Message`] per frame, decoded by `framed`'s codec (its
    /// [`Message::payload`] is the frame's decompressed payload). A payload
    /// the codec rejects fails alone (stage [`Stage::Decode`]); a malformed
    /// or oversized frame stops the pipeline with the error. Offsets are
    /// committed only where no partial frame is carried.
    pub fn framed<C: Codec>(stream: &Stream, framed: Framed<C>) -> PipelineBuilder<C::Item> {
        PipelineBuilder::new(
            stream.clone(),
            false,
            Arc::new(move |start: &Offset| {
                let framed = framed.clone();
                let mut decoder = framed.settings().decoder(start.clone());
                Box::new(move |chunk: &mut Chunk| {
                    let payloads = decoder.decode_chunk(chunk)?;
                    let near = decoder.resume_offset();
                    Ok(payloads
                        .into_iter()
                        .map(|p| (framed.decode_payload(p.clone(), near), p))
                        .collect())
                }) as ChunkDecoder<C::Item>
            }),
        )
    }
}

pub(super) fn decode_json<T: DeserializeOwned>(chunk: &mut Chunk) -> Result<Decoded<T>> {
    Ok(chunk
        .take_json_messages()?
        .into_iter()
        .map(|raw| (crate::json::decode_message(&raw), raw))
        .collect())
}
