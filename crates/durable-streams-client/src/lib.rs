//! An async Rust client for the [Durable Streams] protocol: durable,
//! append-only byte streams addressed by URL, with catch-up, long-poll and
//! SSE reads from any offset.
//!
//! - [`Client`]: one per process; connection pool, default headers,
//!   timeouts and the [`RetryPolicy`].
//! - [`Stream`]: a cold, cheap, cloneable handle for one stream URL; every
//!   operation (create, append, close, delete, head, fork) and every read.
//! - Reads are `futures::Stream`s of bytes ([`ChunkStream`]), text
//!   ([`TextStream`]) or typed JSON ([`JsonStream`]) in every [`LiveMode`],
//!   resuming from the last delivered [`Offset`] after reconnects. Many
//!   local subscribers of one stream can share a single read
//!   ([`SharedRead`], [`ReadBuilder::shared`]).
//! - One [`Error`] type with a matchable [`ErrorKind`].
//! - Writing at volume: the idempotent [`Producer`] ([`producer`]):
//!   batched, pipelined, exactly-once under retries, bounded buffer.
//! - Long-running processing: [`consumer`] (one handler, batch by batch),
//!   [`pipeline`] (concurrent processors, batchers, dead letters, in-order
//!   checkpoints, bounded memory) and a [`supervisor`] that restarts them.
//!
//! # Stream URLs
//!
//! A stream is just a URL: the protocol lets a server put streams at any
//! path, so [`Client::stream`] takes the full URL. The reference servers
//! serve stream `name` at `{base}/v1/stream/{name}` (for example
//! `http://127.0.0.1:4437/v1/stream/chat`); [`Client::stream_at`] builds
//! that from a base URL and a name ([`Client::stream_url`] returns the URL).
//!
//! ```no_run
//! use durable_streams_client::{Client, CreateOptions, LiveMode, Offset};
//! use futures::StreamExt;
//!
//! # async fn demo() -> durable_streams_client::Result<()> {
//! let client = Client::new();
//! let stream = client.stream("http://127.0.0.1:4437/v1/stream/chat")?;
//! stream.create_with(CreateOptions::json()).await?;
//! stream.append_json(&serde_json::json!({"user": "ada", "text": "hi"})).await?;
//!
//! let mut live = stream.read().offset(Offset::start()).live(LiveMode::Auto).json::<serde_json::Value>();
//! while let Some(batch) = live.next().await {
//!     let batch = batch?;
//!     println!("{:?} (resume from {})", batch.items, batch.offset);
//!     if batch.up_to_date { break; }
//! }
//! # Ok(()) }
//! ```
//!
//! # Retries and write safety
//!
//! A write is reported done only when the server answered it with a 2xx.
//! Requests are retried with exponential backoff and jitter (one budget per
//! operation, [`RetryPolicy`]) when the connection could not be made, or
//! when the server answered 429, 500 or 503 (honouring `Retry-After`).
//! Reads, HEAD, DELETE, create, close and producer appends are also retried
//! after 502/504, timeouts, dropped connections and truncated bodies. A
//! plain append in those cases has an unknown outcome: it is not retried
//! (unless [`AppendOptions::retry_unknown_outcome`]) and the error says so
//! ([`Error::is_outcome_unknown`]). The [`Producer`] retries every failure
//! safely, because the server deduplicates its numbered requests.
//!
//! Writes never follow a redirect other than a 307/308 to the same origin;
//! reads follow same-origin redirects ([`RedirectPolicy`]); credentials are
//! never sent to another origin. 401/403 are [`ErrorKind::Unauthorized`],
//! or call a refresh hook first ([`Stream::with_auth_refresh`]).
//!
//! # Printing errors
//!
//! An [`Error`]'s `Display` is one line a user can act on: what failed, the
//! stream path, `host:port`, the HTTP status, the server's message and the
//! chain of causes (`network error for stream /v1/stream/x on
//! 127.0.0.1:4437: ...: caused by connection refused`); never credentials or
//! a query string. A `main` that returns `Err` prints the `Debug` form
//! (for this crate's [`Result`] and for `Box<dyn std::error::Error>`
//! alike), which is made for matching, not reading: print the error
//! yourself with `{}`:
//!
//! ```no_run
//! # async fn run() -> durable_streams_client::Result<()> { Ok(()) }
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     if let Err(err) = run().await {
//!         eprintln!("error: {err}");
//!         return std::process::ExitCode::FAILURE;
//!     }
//!     std::process::ExitCode::SUCCESS
//! }
//! ```
//!
//! [Durable Streams]: https://github.com/durable-streams/durable-streams

#![deny(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod checkpoint;
mod client;
pub mod codec;
pub mod consumer;
mod error;
mod http;
mod json;
mod json_encode;
mod offset;
pub mod pipeline;
pub mod producer;
mod read;
mod request;
mod retry;
mod runtime;
pub mod state;
mod stream;
pub mod subscription;
pub mod supervisor;
mod swar;
pub mod telemetry;
#[cfg(test)]
mod testing;
mod transport;

pub use client::{Client, ClientBuilder, DEFAULT_MAX_RESPONSE_BYTES};
pub use error::{
    ConflictReason, DecodeKind, Error, ErrorKind, Result, SubscriptionErrorCode, WebhookRejection,
};
pub use offset::{InvalidOffset, Offset};
pub use producer::{
    Ack, DEFAULT_DELIVERY_TIMEOUT, DEFAULT_LINGER, DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_IN_FLIGHT, FailedBatch, Producer, ProducerBuilder,
    ProducerStats, ProducerWriter, Receipt,
};
pub use read::{
    Chunk, ChunkStream, JsonBatch, JsonStream, LiveMode, ReadBuilder, SharedRead, TextChunk,
    TextStream,
};
pub use retry::RetryPolicy;
pub use stream::{
    AppendOptions, AppendResult, CloseResult, CreateOptions, CreateResult, ForkOptions,
    JSON_CONTENT_TYPE, Stream, StreamInfo,
};
pub use transport::{RedirectPolicy, RefreshFuture};

/// Entry points for fuzzing internal parsers. Not a stable API.
#[doc(hidden)]
#[path = "fuzz.rs"]
pub mod __fuzz;
