//! Long-running consumers: read a stream batch by batch, hand each batch to a
//! [`Handler`], commit the offset to a [`CheckpointStore`], reconnect with
//! backoff after failures, and resume from the checkpoint after a restart.
//!
//! ```no_run
//! use durable_streams_client::consumer::{
//!     Batch, Consumer, FileCheckpointStore, Flow, Handler, Json, StartFrom,
//! };
//! use durable_streams_client::{Client, Result};
//!
//! #[derive(serde::Deserialize)]
//! struct Order { id: u64 }
//!
//! struct Orders;
//! impl Handler for Orders {
//!     type Format = Json<Order>;
//!     async fn handle_batch(&mut self, batch: &Batch<Order>) -> Result<Flow> {
//!         for order in &batch.items { println!("order {}", order.id); }
//!         Ok(Flow::Continue)
//!     }
//! }
//!
//! # async fn demo() -> Result<()> {
//! let stream = Client::new().stream("http://127.0.0.1:4437/v1/stream/orders")?;
//! let handle = Consumer::builder(&stream, Orders)
//!     .name("billing")
//!     .start_from(StartFrom::Checkpoint)
//!     .checkpoint_store(FileCheckpointStore::new("/var/lib/billing/checkpoints"))
//!     .build()?
//!     .spawn();
//! // ... later: finish the current batch, commit it, stop.
//! let reason = handle.shutdown().await?;
//! println!("stopped: {reason:?}");
//! # Ok(()) }
//! ```
//!
//! # Delivery guarantee: at least once
//!
//! A batch's offset is committed (saved to the checkpoint store, then shown by
//! [`ConsumerHandle::offset`]) only **after** [`Handler::handle_batch`]
//! returned `Ok`. A crash, an abort or a failing handler between receiving a
//! batch and committing it means the batch is delivered again on the next
//! start or reconnect. Handlers must therefore tolerate duplicates (be
//! idempotent, or deduplicate by position). Within one run, batches arrive in
//! stream order without gaps or repeats. Only exact resume positions are
//! committed ([`Batch::exact`]): the pieces of one large response share the
//! response's start offset, so a restart may deliver up to one response
//! again. A checkpoint never moves backwards.
//!
//! # Bytes or JSON
//!
//! A handler picks how batches are decoded with its associated
//! [`Handler::Format`]: [`Json<T>`] deserializes every JSON message of an
//! `application/json` stream into `T` with serde (a batch holds the messages
//! of one server response), [`Raw`] hands over the bytes as they arrive (a
//! batch holds at most one [`Bytes`] item). One trait with a type-level format
//! keeps a single consumer engine, one set of options and one handle type for
//! both, and the handler's item type is checked at compile time.
//!
//! # Failures
//!
//! Read errors, handler errors (`Err` from [`Handler::handle_batch`]),
//! handler panics (caught; [`ErrorKind::Handler`] with `panicked: true`),
//! decode errors and checkpoint errors all go to [`Handler::handle_error`],
//! which answers [`ErrorAction::Reconnect`] or [`ErrorAction::Stop`]. The
//! default reconnects for retryable kinds ([`Error::is_retryable`]) and stops
//! otherwise. A reconnect waits for the consumer's [`RetryPolicy`] delay (with
//! jitter, growing with each consecutive failure, reset by any successful
//! batch) and resumes from the last committed offset. After
//! [`RetryPolicy::max_retries`] consecutive failed attempts the consumer stops
//! with the error.
//!
//! # Telemetry
//!
//! Each consumer runs in a `durable_streams.consumer` tracing span. Every
//! batch emits a `durable_streams.consumer.batch` event (`count`, `bytes`,
//! `offset`) and every reconnect a `durable_streams.consumer.reconnect` event
//! (`attempt`, `delay_ms`, `reason`); with the `metrics` feature the matching
//! counters of [`telemetry`](crate::telemetry) are incremented.
//!
//! # Memory
//!
//! A consumer holds one batch at a time (bounded by the client's
//! `max_response_bytes`) and uses no channels: reading pauses while the
//! handler runs.

mod runner;

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::runner::Runner;
pub use crate::checkpoint::{
    CheckpointStore, FileCheckpointStore, MAX_NAME_LEN, MemoryCheckpointStore,
};

use crate::codec::{Codec, FrameDecoder, Framed};
#[cfg(any(doc, test))]
use crate::error::ErrorKind;
use crate::error::{Error, Result};
use crate::offset::Offset;
use crate::read::Chunk;
#[cfg(doc)]
use crate::read::LiveMode;
#[cfg(doc)]
use crate::retry::RetryPolicy;
use crate::runtime::{OnDrop, ReaderConfig, TaskHandle};
pub use crate::runtime::{StartFrom, default_retry_policy};
use crate::stream::Stream;

mod sealed {
    pub trait Sealed {}
}

/// How a consumer decodes what it reads: [`Json<T>`], [`Raw`] or
/// [`Frames<C>`]. Sealed.
pub trait Format: sealed::Sealed + Send + Sync + 'static {
    /// The type of [`Batch::items`].
    type Item: Send + Sync + 'static;

    /// Whether the stream is read as JSON (message framing).
    #[doc(hidden)]
    const JSON: bool;

    /// The decoding state of one read session.
    #[doc(hidden)]
    type Decoder: Send + 'static;

    /// What decoding needs from the user (the codec and framing of
    /// [`Frames<C>`]); `()` for the others.
    #[doc(hidden)]
    type Settings: Clone + Send + Sync + 'static;

    /// The settings used when none were given (`None`: they must be given).
    #[doc(hidden)]
    fn default_settings() -> Option<Self::Settings>;

    /// A decoder for a read session starting at `start`.
    #[doc(hidden)]
    fn decoder(settings: &Self::Settings, start: &Offset) -> Self::Decoder;

    /// Decode one read chunk (the session's chunks arrive in order).
    #[doc(hidden)]
    fn decode(decoder: &mut Self::Decoder, chunk: &mut Chunk) -> Result<Vec<Self::Item>>;

    /// A decoder for the read session itself to decode large responses
    /// with while they arrive (messages up to `limit` bytes); `decode` then
    /// takes their items from `decoder`.
    #[doc(hidden)]
    fn session_decoder(_decoder: &mut Self::Decoder, _limit: usize) -> Option<SessionDecoder> {
        None
    }
}

/// What a [`Format`] hands a read session to decode with. Not public API.
#[doc(hidden)]
pub struct SessionDecoder(pub(crate) Box<dyn crate::json::ArrayDecoder>);

impl fmt::Debug for SessionDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionDecoder")
    }
}

/// The decoding state of a [`Json<T>`] read session: the typed reader it
/// shares with the session, once there is one. Not public API.
#[doc(hidden)]
pub struct JsonDecoder<T>(Option<crate::json::SharedArrayReader<T>>);

impl<T> fmt::Debug for JsonDecoder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JsonDecoder")
    }
}

/// JSON messages deserialized into `T` (for `application/json` streams).
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Json<{}>", std::any::type_name::<T>())
    }
}

impl<T> sealed::Sealed for Json<T> {}

impl<T: DeserializeOwned + Send + Sync + 'static> Format for Json<T> {
    type Item = T;
    const JSON: bool = true;
    type Decoder = JsonDecoder<T>;
    type Settings = ();

    fn default_settings() -> Option<()> {
        Some(())
    }

    fn decoder((): &(), _: &Offset) -> JsonDecoder<T> {
        JsonDecoder(None)
    }

    fn decode(decoder: &mut JsonDecoder<T>, chunk: &mut Chunk) -> Result<Vec<T>> {
        crate::json::decode_typed(decoder.0.as_ref(), chunk)
    }

    fn session_decoder(decoder: &mut JsonDecoder<T>, limit: usize) -> Option<SessionDecoder> {
        let typed = crate::json::SharedArrayReader::new(limit);
        decoder.0 = Some(typed.clone());
        Some(SessionDecoder(Box::new(typed)))
    }
}

/// Raw bytes as the server delivers them; each batch has at most one item.
#[derive(Debug)]
pub struct Raw;

impl sealed::Sealed for Raw {}

impl Format for Raw {
    type Item = Bytes;
    const JSON: bool = false;
    type Decoder = ();
    type Settings = ();

    fn default_settings() -> Option<()> {
        Some(())
    }

    fn decoder((): &(), _: &Offset) {}

    fn decode((): &mut (), chunk: &mut Chunk) -> Result<Vec<Bytes>> {
        Ok(if chunk.data.is_empty() {
            Vec::new()
        } else {
            vec![chunk.data.clone()]
        })
    }
}

/// Messages of a framed binary stream ([`codec`](crate::codec)) decoded
/// by the codec `C`. The codec and its framing (size limit) are given to
/// the builder: [`ConsumerBuilder::framed`] (or
/// [`WorkerBuilder::framed`](crate::subscription::WorkerBuilder::framed));
/// `build` fails with `InvalidArgument { field: "framed" }` without them.
/// A batch holds the messages completed by one read chunk (possibly none);
/// its offset is exact, and committed, only when no partial frame is
/// carried past it. A malformed frame or a payload the codec rejects is an
/// error for [`Handler::handle_error`].
pub struct Frames<C>(PhantomData<fn() -> C>);

impl<C> fmt::Debug for Frames<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frames<{}>", std::any::type_name::<C>())
    }
}

impl<C> sealed::Sealed for Frames<C> {}

impl<C> Format for Frames<C>
where
    C: Codec,
    C::Item: Sync,
{
    type Item = C::Item;
    const JSON: bool = false;
    type Decoder = (FrameDecoder, Framed<C>);
    type Settings = Framed<C>;

    fn default_settings() -> Option<Framed<C>> {
        None
    }

    fn decoder(framed: &Framed<C>, start: &Offset) -> Self::Decoder {
        (framed.settings().decoder(start.clone()), framed.clone())
    }

    fn decode((decoder, framed): &mut Self::Decoder, chunk: &mut Chunk) -> Result<Vec<C::Item>> {
        let payloads = decoder.decode_chunk(chunk)?;
        let near = decoder.resume_offset();
        payloads
            .into_iter()
            .map(|p| framed.decode_payload(p, near))
            .collect()
    }
}

/// The item type of handler `H`'s batches.
pub type Item<H> = <<H as Handler>::Format as Format>::Item;

/// What a consumer hands to [`Handler::handle_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Batch<T> {
    /// The decoded items in stream order (never empty when handed to a handler).
    pub items: Vec<T>,
    /// Where to resume after these items when [`Batch::exact`]; committed
    /// once the handler succeeds. A piece of a large response carries the
    /// offset the response started at (`exact == false`) and is not
    /// committed: a restart delivers it again.
    pub offset: Offset,
    /// Whether `offset` is an exact resume position (only those are committed).
    pub exact: bool,
    /// The server's cursor.
    pub cursor: Option<String>,
    /// The consumer has everything the stream held when this was served.
    pub up_to_date: bool,
    /// The stream is closed and this is its end.
    pub closed: bool,
    /// Size of the batch on the wire, in bytes.
    pub bytes: usize,
    /// Where the batch came from: the stream's URL for consumers, its
    /// root-relative path (as in subscription bodies) for
    /// [subscription workers](crate::subscription::Worker). Empty in
    /// [`Batch::new`].
    pub stream: Arc<str>,
}

impl<T> Batch<T> {
    /// A batch of `items` ending at `offset` (for testing handlers).
    pub fn new(items: Vec<T>, offset: Offset) -> Self {
        Batch {
            items,
            offset,
            exact: true,
            cursor: None,
            up_to_date: false,
            closed: false,
            bytes: 0,
            stream: Arc::from(""),
        }
    }

    /// The batch of `items` decoded from `chunk` (`bytes` on the wire),
    /// at the chunk's position.
    pub(crate) fn from_chunk(
        items: Vec<T>,
        chunk: crate::read::Chunk,
        bytes: usize,
        stream: Arc<str>,
    ) -> Self {
        Batch {
            items,
            offset: chunk.offset,
            exact: chunk.exact,
            cursor: chunk.cursor,
            up_to_date: chunk.up_to_date,
            closed: chunk.closed,
            bytes,
            stream,
        }
    }
}

/// What the consumer does after a batch was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Commit and read on.
    Continue,
    /// Commit and stop; the consumer ends with [`StopReason::Handler`].
    Stop,
}

/// What the consumer does after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// Wait for the retry delay, then resume from the last committed offset.
    Reconnect,
    /// Stop; the consumer ends with this error.
    Stop,
}

impl ErrorAction {
    /// The default decision: reconnect for retryable errors (network, timeouts,
    /// 5xx, 429), stop for everything else.
    pub fn default_for(error: &Error) -> ErrorAction {
        if error.is_retryable() {
            ErrorAction::Reconnect
        } else {
            ErrorAction::Stop
        }
    }
}

/// Application logic of a consumer.
///
/// Implement the methods with `async fn`; the futures must be `Send`. The
/// consumer calls one method at a time, never concurrently.
pub trait Handler: Send + 'static {
    /// How batches are decoded: [`Json<T>`], [`Raw`] or [`Frames<C>`].
    type Format: Format;

    /// Handle one batch. `Ok` commits `batch.offset`; `Err` goes to
    /// [`handle_error`](Handler::handle_error) and the batch is delivered
    /// again if the consumer reconnects. A panic is caught and treated like an
    /// error of kind [`ErrorKind::Handler`] with `panicked: true`.
    fn handle_batch(
        &mut self,
        batch: &Batch<Item<Self>>,
    ) -> impl Future<Output = Result<Flow>> + Send;

    /// Decide what to do after an error (default: [`ErrorAction::default_for`]).
    fn handle_error(&mut self, error: &Error) -> impl Future<Output = ErrorAction> + Send {
        let action = ErrorAction::default_for(error);
        async move { action }
    }

    /// Called when the consumer has caught up with the stream's tail (after
    /// committing the batch that got it there), and again each time it caught
    /// up after falling behind or reconnecting. Does nothing by default.
    fn on_up_to_date(&mut self, _offset: &Offset) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Called once the stream is closed and everything was handled, right
    /// before the consumer ends with [`StopReason::Closed`]. Does nothing by default.
    fn on_closed(&mut self, _offset: &Offset) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Why a consumer stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The handler returned [`Flow::Stop`].
    Handler,
    /// The stream is closed and all its data was handled.
    Closed,
    /// [`ConsumerHandle::shutdown`] (or the shutdown token) asked it to stop.
    Shutdown,
    /// With [`LiveMode::Off`]: the consumer reached the tail.
    CaughtUp,
}

/// Configures a [`Consumer`]. Made by [`Consumer::builder`].
pub struct ConsumerBuilder<H: Handler> {
    reader: ReaderConfig,
    handler: H,
    format: Option<FormatSettings<H>>,
}

/// The settings of handler `H`'s format.
pub(crate) type FormatSettings<H> = <<H as Handler>::Format as Format>::Settings;

/// The given settings, else the format's default, else an error naming
/// the builder method that gives them.
pub(crate) fn resolve_format<F: Format>(given: Option<F::Settings>) -> Result<F::Settings> {
    given.or_else(F::default_settings).ok_or_else(|| {
        Error::invalid_argument(
            "framed",
            "a handler of Frames<C> needs its codec: call .framed(Framed::new(codec)) on the builder",
        )
    })
}

impl<H: Handler> fmt::Debug for ConsumerBuilder<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("stream", &self.reader.stream)
            .field("name", &self.reader.name)
            .field("start", &self.reader.start)
            .field("live", &self.reader.live)
            .field("retry", &self.reader.retry)
            .field("checkpoints", &self.reader.store.is_some())
            .finish_non_exhaustive()
    }
}

impl<H: Handler> ConsumerBuilder<H> {
    crate::runtime::reader_setters! {
        /// The consumer's name: its checkpoint key and telemetry label
        /// (default `"consumer"`).
        name;
        /// Where to start (default [`StartFrom::Checkpoint`]).
        start_from;
        /// How to read once caught up (default [`LiveMode::Auto`]). With
        /// [`LiveMode::Off`] the consumer stops at the tail with [`StopReason::CaughtUp`].
        live;
        /// Reconnect backoff and give-up limit (default [`default_retry_policy`]).
        /// Individual requests are still retried by the client's own policy first.
        retry_policy;
        /// Persist committed offsets here (default: none, offsets live only in
        /// memory and [`StartFrom::Checkpoint`] starts at the beginning).
        checkpoint_store;
    }

    /// Check the configuration: the retry policy and the name (which the
    /// checkpoint store may restrict). Errors are `InvalidArgument`.
    pub fn build(self) -> Result<Consumer<H>> {
        self.reader.validate("consumer")?;
        let settings = resolve_format::<H::Format>(self.format.clone())?;
        Ok(Consumer {
            config: self,
            settings,
        })
    }
}

impl<H, C> ConsumerBuilder<H>
where
    H: Handler<Format = Frames<C>>,
    C: Codec,
    C::Item: Sync,
{
    /// The codec and framing that decode a [`Frames<C>`] handler's
    /// messages (required for that format).
    pub fn framed(mut self, framed: Framed<C>) -> Self {
        self.format = Some(framed);
        self
    }
}

/// A configured consumer, ready to [`spawn`](Consumer::spawn) or
/// [`run`](Consumer::run).
pub struct Consumer<H: Handler> {
    config: ConsumerBuilder<H>,
    settings: FormatSettings<H>,
}

impl<H: Handler> fmt::Debug for Consumer<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .finish()
    }
}

impl<H: Handler> Consumer<H> {
    /// Start configuring a consumer of `stream` that feeds `handler`.
    pub fn builder(stream: &Stream, handler: H) -> ConsumerBuilder<H> {
        ConsumerBuilder {
            reader: ReaderConfig::new(stream.clone(), "consumer"),
            handler,
            format: None,
        }
    }

    /// Run the consumer on a new tokio task. Must be called inside a tokio
    /// runtime (panics otherwise, like `tokio::spawn`).
    pub fn spawn(self) -> ConsumerHandle {
        let name = self.config.reader.name.clone();
        ConsumerHandle(TaskHandle::spawn(
            "the consumer task",
            &name,
            None,
            OnDrop::Abort,
            |token, tx| self.run_with(token, tx),
        ))
    }

    /// Run the consumer in the current task until it stops; cancelling
    /// `shutdown` stops it like [`ConsumerHandle::shutdown`].
    pub fn run(
        self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<StopReason>> + Send {
        let (tx, _rx) = watch::channel(None);
        self.run_with(shutdown, tx)
    }

    fn run_with(
        self,
        token: CancellationToken,
        committed: watch::Sender<Option<Offset>>,
    ) -> impl Future<Output = Result<StopReason>> + Send + 'static {
        let (c, settings) = (self.config, self.settings);
        let span = tracing::info_span!(
            "durable_streams.consumer",
            consumer = %c.reader.name,
            path = %c.reader.stream.url().path(),
        );
        let runner = Runner::new(c.reader, c.handler, settings, token, committed);
        runner.run().instrument(span)
    }
}

/// Controls a spawned consumer. `Send + Sync`.
///
/// Dropping the handle **aborts** the consumer like [`abort`](ConsumerHandle::abort)
/// (the current batch is not committed and will be delivered again); use
/// [`shutdown`](ConsumerHandle::shutdown) to stop cleanly or
/// [`detach`](ConsumerHandle::detach) to let it run on its own.
pub struct ConsumerHandle(TaskHandle<StopReason>);

crate::runtime::reader_handle! {
    ConsumerHandle -> StopReason;
    /// The consumer's name.
    name;
    /// The last committed offset: the one loaded from the checkpoint store at
    /// start, or the end of the last batch the handler finished. `None` before
    /// either.
    offset;
    /// A receiver that sees every committed offset.
    subscribe;
    /// Whether the consumer has stopped.
    is_finished;
    /// Ask the consumer to stop without waiting: it finishes and commits the
    /// batch in hand, then ends with [`StopReason::Shutdown`].
    request_shutdown;
    /// Stop cleanly and wait: finish the current batch, commit it, stop.
    /// Returns why the consumer stopped (another reason if it had already
    /// stopped on its own).
    shutdown;
    /// Run until `signal` resolves, then stop cleanly and wait like
    /// [`shutdown`](ConsumerHandle::shutdown); if the consumer stops on its
    /// own first, return like [`join`](ConsumerHandle::join). Any future
    /// serves as the signal (a `CancellationToken::cancelled()`, a oneshot
    /// receiver, a timer). Dropping the returned future aborts the
    /// consumer, like dropping the handle.
    shutdown_on;
    /// Run until ctrl-c (SIGINT), then stop cleanly and wait like
    /// [`shutdown`](ConsumerHandle::shutdown); if the consumer stops on its
    /// own first, return like [`join`](ConsumerHandle::join).
    ///
    /// From the first call on, ctrl-c no longer ends the process by itself
    /// (tokio replaces the default handler for the life of the process).
    /// Several consumers or pipelines under one ctrl-c belong in a
    /// [`supervisor`](crate::supervisor) with
    /// [`stop_on_ctrl_c`](crate::supervisor::SupervisorBuilder::stop_on_ctrl_c).
    ///
    /// ```no_run
    /// # use durable_streams_client::consumer::{Batch, Consumer, Flow, Handler, Raw};
    /// # use durable_streams_client::{Client, Result};
    /// # struct Print;
    /// # impl Handler for Print {
    /// #     type Format = Raw;
    /// #     async fn handle_batch(&mut self, batch: &Batch<bytes::Bytes>) -> Result<Flow> {
    /// #         Ok(Flow::Continue)
    /// #     }
    /// # }
    /// # async fn demo() -> Result<()> {
    /// let stream = Client::new().stream("http://127.0.0.1:4437/v1/stream/orders")?;
    /// let handle = Consumer::builder(&stream, Print).name("print").build()?.spawn();
    /// let reason = handle.shutdown_on_ctrl_c().await?;
    /// println!("stopped: {reason:?}");
    /// # Ok(()) }
    /// ```
    shutdown_on_ctrl_c;
    /// Wait until the consumer stops on its own. `Err` when it stopped
    /// because of an error (see [`Handler::handle_error`]).
    join;
    /// Kill the consumer immediately, like a crash: the batch in hand is not
    /// committed and will be delivered again by the next consumer with the
    /// same checkpoint.
    abort;
    /// Let the consumer run without a handle (it stops on its own only).
    detach;
}

#[cfg(test)]
mod tests;
