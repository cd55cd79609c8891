//! Reads: catch-up, long-poll, SSE and auto, as typed `futures::Stream`s.
//!
//! Every shape ([`ChunkStream`], [`TextStream`], [`JsonStream`]) is driven by
//! one session state machine that resumes from the last delivered offset after
//! any reconnect (no loss, no duplicates) and ends cleanly when the server
//! signals that the stream is closed. Up-to-date alone never ends a live read.
//! After an error item the stream ends; start a new read from the last
//! delivered [`Chunk::offset`] to continue.
//!
//! Reads guard the server as much as the caller: offsets only move forward
//! (anything else is a `Decode(Offset)` error), answers that do not move the
//! read forward are backed off from and end the read with
//! [`ErrorKind::NoProgress`](crate::ErrorKind::NoProgress) after
//! [`ReadBuilder::max_no_progress`] in a row, and live reads ride out outages
//! of any length with capped backoff (4xx answers end them).

mod guard;
mod session;
mod shared;
pub(crate) mod sse;

pub(crate) use session::fuzz_entry_control;

use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream as FuturesStream, StreamExt};
use serde::de::DeserializeOwned;

use crate::error::{DecodeKind, Error, Result};
use crate::offset::Offset;
use crate::stream::Stream;

pub(crate) use guard::checkpoint_moves;
use session::ReadOptions;
pub(crate) use session::Session;
pub use shared::SharedRead;

impl Stream {
    /// Configure a read: start offset, live mode, and the item shape.
    pub fn read(&self) -> ReadBuilder {
        ReadBuilder::new(self.clone())
    }

    /// Catch up from the start and return all bytes.
    pub async fn read_bytes(&self) -> Result<Bytes> {
        self.read().live(LiveMode::Off).collect_bytes().await
    }

    /// Catch up from the start and return all data as UTF-8 text.
    pub async fn read_text(&self) -> Result<String> {
        let bytes = self.read_bytes().await?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            Error::decode(DecodeKind::Utf8, format!("stream data is not UTF-8: {e}"))
                .with_url(&self.inner.url)
        })
    }

    /// Catch up from the start and return every JSON message, deserialized.
    pub async fn read_json<T: DeserializeOwned + Send + 'static>(&self) -> Result<Vec<T>> {
        self.read().live(LiveMode::Off).collect_json().await
    }
}

/// How a read continues once it has caught up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LiveMode {
    /// Catch up to the current tail, then end (no live tailing).
    #[default]
    Off,
    /// Catch up, then long-poll for new data until the stream is closed.
    LongPoll,
    /// Server-sent events from the start offset until the stream is closed.
    Sse,
    /// Catch up, then SSE; falls back to long-poll when SSE is refused or
    /// when three connections in a row end within a second (whatever they
    /// delivered).
    Auto,
}

impl LiveMode {
    /// Whether the read keeps going after catching up.
    pub fn is_live(self) -> bool {
        self != LiveMode::Off
    }
}

/// A piece of stream data with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Chunk {
    /// The bytes (for JSON streams: a JSON array of messages).
    pub data: Bytes,
    /// Where to resume to get what follows this data, when [`Chunk::exact`].
    /// A large response is delivered in pieces, and the server gives no
    /// position inside a response, so a piece before the last one carries
    /// the offset the response started at (`exact == false`): resuming there
    /// delivers the earlier pieces again. The last piece carries the
    /// response's next offset.
    pub offset: Offset,
    /// Whether `offset` is an exact resume position (right after this
    /// data). Checkpoint only exact offsets; consumers and pipelines do.
    pub exact: bool,
    /// The server's cursor, echoed on live requests.
    pub cursor: Option<String>,
    /// The reader has everything the stream held when this was served.
    pub up_to_date: bool,
    /// The stream is closed and this is its end: nothing more will arrive.
    pub closed: bool,
    /// The HTTP status of the response this came from: 200, or 204 for a
    /// long-poll that ended without data (timeout or closed stream).
    pub status: u16,
    /// JSON streams: the messages of `data`, already split while the body
    /// arrived (saves splitting `data` again for typed reads).
    pub(crate) messages: Option<Vec<Bytes>>,
    /// Typed JSON reads: this chunk's messages were decoded by the read's
    /// own decoder while the body arrived and wait there (`data` is empty);
    /// the body bytes they came from.
    pub(crate) typed_bytes: Option<usize>,
}

impl Chunk {
    /// JSON streams: the chunk's messages, split once (by the read itself
    /// when the response was streamed, else from `data`).
    pub(crate) fn take_json_messages(&mut self) -> Result<Vec<Bytes>> {
        match self.messages.take() {
            Some(messages) => Ok(messages),
            None => crate::json::split_messages(&self.data),
        }
    }
}

/// Text with its position. Multi-byte characters split across chunks are
/// carried over to the next item, so `offset` may include a few bytes of a
/// character whose text appears in the next item.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TextChunk {
    /// The text.
    pub text: String,
    /// Where to resume: right after the bytes consumed so far when
    /// [`TextChunk::exact`], else where the response these bytes came from
    /// started (see [`Chunk::offset`]).
    pub offset: Offset,
    /// Whether `offset` is an exact resume position (a piece of a larger
    /// response, or text ending inside a multi-byte character, is not).
    pub exact: bool,
    /// The server's cursor.
    pub cursor: Option<String>,
    /// Up to date with the stream when served.
    pub up_to_date: bool,
    /// The stream is closed and this is its end.
    pub closed: bool,
    /// The HTTP status of the response this came from: 200, or 204 for a
    /// long-poll that ended without data (timeout or closed stream).
    pub status: u16,
}

/// Typed JSON messages with their position (checkpoint with `offset`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JsonBatch<T> {
    /// The messages, in stream order.
    pub items: Vec<T>,
    /// Where to resume: right after these messages when
    /// [`JsonBatch::exact`], else where the response these messages came
    /// from started (a piece of a large response; see [`Chunk::offset`]).
    pub offset: Offset,
    /// Whether `offset` is an exact resume position. Checkpoint only exact
    /// offsets.
    pub exact: bool,
    /// The server's cursor.
    pub cursor: Option<String>,
    /// Up to date with the stream when served.
    pub up_to_date: bool,
    /// The stream is closed and this is its end.
    pub closed: bool,
    /// The HTTP status of the response this came from: 200, or 204 for a
    /// long-poll that ended without data (timeout or closed stream).
    pub status: u16,
}

/// Configures a read. Made by [`Stream::read`].
///
/// ```no_run
/// # async fn demo(stream: durable_streams_client::Stream) -> durable_streams_client::Result<()> {
/// use futures::StreamExt;
/// use durable_streams_client::{LiveMode, Offset};
/// let mut batches = stream
///     .read()
///     .offset(Offset::start())
///     .live(LiveMode::Auto)
///     .json::<serde_json::Value>();
/// while let Some(batch) = batches.next().await {
///     let batch = batch?;
///     for item in &batch.items { println!("{item}"); }
///     // persist batch.offset to resume later (when it is exact)
///     if batch.exact { /* save batch.offset */ }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ReadBuilder {
    stream: Stream,
    offset: Offset,
    live: LiveMode,
    options: ReadOptions,
}

impl ReadBuilder {
    pub(crate) fn new(stream: Stream) -> Self {
        ReadBuilder {
            stream,
            offset: Offset::start(),
            live: LiveMode::Off,
            options: ReadOptions::default(),
        }
    }

    /// Where to start (default: the beginning).
    pub fn offset(mut self, offset: Offset) -> Self {
        self.offset = offset;
        self
    }

    /// How to continue after catching up (default: [`LiveMode::Off`]).
    pub fn live(mut self, live: LiveMode) -> Self {
        self.live = live;
        self
    }

    /// Answers in a row that may fail to move the read forward before it
    /// ends with [`ErrorKind::NoProgress`](crate::ErrorKind::NoProgress)
    /// (default 10; `0` counts as 1). Such answers (a catch-up repeating its
    /// offset without `Stream-Up-To-Date`, a long-poll answered early with
    /// nothing new and the same cursor, an SSE connection ending within a
    /// second without data) are backed off from exponentially and retried
    /// with a cache-busting query parameter. Healthy long-polls and the
    /// server's periodic SSE close are never counted. With
    /// [`LiveMode::Off`] the client's retry budget may end the read first.
    pub fn max_no_progress(mut self, n: u32) -> Self {
        self.options.max_no_progress = n;
        self
    }

    /// Longest life of one SSE connection (default 10 min): the read then
    /// reconnects from the last control offset, even when comments keep the
    /// connection alive (guards against half-dead connections).
    pub fn sse_max_age(mut self, age: Duration) -> Self {
        self.options.sse_max_age = age;
        self
    }

    pub(crate) fn stream_url(&self) -> &url::Url {
        self.stream.url()
    }

    pub(crate) fn start_offset(&self) -> &Offset {
        &self.offset
    }

    fn session(self, json: bool) -> Session {
        Session::with_options(self.stream, self.offset, self.live, json, self.options)
    }

    /// Raw chunks with metadata.
    pub fn bytes(self) -> ChunkStream {
        let session = self.session(false);
        ChunkStream {
            inner: session.into_stream().boxed(),
        }
    }

    /// UTF-8 text chunks. Invalid UTF-8 is a `Decode(Utf8)` error.
    pub fn text(self) -> TextStream {
        let url = self.stream.url().clone();
        text_stream(self.bytes(), url)
    }

    /// Typed JSON messages, in batches as the server delivers them. Each item
    /// is deserialized with serde; a message that does not fit `T` is a
    /// `Decode(Json)` error.
    pub fn json<T: DeserializeOwned + Send + 'static>(self) -> JsonStream<T> {
        let url = self.stream.url().clone();
        let typed = crate::json::SharedArrayReader::new(self.stream.client().max_response_bytes());
        let mut session = self.session(true);
        // Large responses are decoded straight into `T` while they arrive.
        session.decode_with(Box::new(typed.clone()));
        let chunks = ChunkStream {
            inner: session.into_stream().boxed(),
        };
        json_stream(chunks, url, Some(typed))
    }

    /// Read to the end of this read (the tail for [`LiveMode::Off`], the
    /// stream's closure for live modes) and return all bytes. Bounded by the
    /// client's `max_response_bytes`.
    pub async fn collect_bytes(self) -> Result<Bytes> {
        let limit = self.stream.client().max_response_bytes();
        let url = self.stream.url().clone();
        let mut chunks = self.bytes();
        // One chunk (the usual small stream) is returned as it came.
        let mut out = session::Pieces::default();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            if out.len() + chunk.data.len() > limit {
                return Err(Error::new(crate::ErrorKind::ResponseTooLarge { limit }).with_url(&url));
            }
            out.push(chunk.data);
        }
        Ok(out.take_all())
    }

    /// Read to the end of this read and return every JSON message.
    pub async fn collect_json<T: DeserializeOwned + Send + 'static>(self) -> Result<Vec<T>> {
        let mut batches = self.json::<T>();
        let mut out = Vec::new();
        while let Some(batch) = batches.next().await {
            out.extend(batch?.items);
        }
        Ok(out)
    }
}

/// Chunks as UTF-8 text (a character split across chunks is carried).
fn text_stream(chunks: ChunkStream, url: url::Url) -> TextStream {
    TextStream {
        inner: decode_chunks(chunks, url, Utf8Carry::default(), Utf8Carry::decode),
    }
}

/// Chunks of a JSON stream as typed batches (those the session decoded
/// while they arrived are taken from `typed`). Ends after an error.
fn json_stream<T: DeserializeOwned + Send + 'static>(
    chunks: ChunkStream,
    url: url::Url,
    typed: Option<crate::json::SharedArrayReader<T>>,
) -> JsonStream<T> {
    let batches = decode_chunks(chunks, url, typed, |typed, mut chunk| {
        let items = crate::json::decode_typed(typed.as_ref(), &mut chunk)?;
        Ok(JsonBatch {
            items,
            offset: chunk.offset,
            exact: chunk.exact,
            cursor: chunk.cursor,
            up_to_date: chunk.up_to_date,
            closed: chunk.closed,
            status: chunk.status,
        })
    });
    JsonStream {
        inner: batches,
        _type: PhantomData,
    }
}

/// Chunks turned into items by `step`, which keeps state across chunks
/// (bytes of a split character or frame). Ends after the first error,
/// which names `url`.
pub(crate) fn decode_chunks<S, U>(
    chunks: ChunkStream,
    url: url::Url,
    state: S,
    step: impl FnMut(&mut S, Chunk) -> Result<U> + Send + 'static,
) -> Pin<Box<dyn FuturesStream<Item = Result<U>> + Send>>
where
    S: Send + 'static,
    U: Send + 'static,
{
    let stream = futures::stream::unfold(
        (chunks, state, step, url, false),
        |(mut chunks, mut state, mut step, url, failed)| async move {
            if failed {
                return None;
            }
            let item = match chunks.next().await? {
                Err(e) => Err(e),
                Ok(chunk) => step(&mut state, chunk).map_err(|e| e.with_url(&url)),
            };
            let failed = item.is_err();
            Some((item, (chunks, state, step, url, failed)))
        },
    );
    stream.boxed()
}

/// Keeps the bytes of a UTF-8 character split across chunks.
#[derive(Debug, Default)]
struct Utf8Carry {
    pending: Vec<u8>,
}

impl Utf8Carry {
    fn decode(&mut self, chunk: Chunk) -> Result<TextChunk> {
        let mut bytes = std::mem::take(&mut self.pending);
        bytes.extend_from_slice(&chunk.data);
        let valid_up_to = match std::str::from_utf8(&bytes) {
            Ok(_) => bytes.len(),
            Err(e) if e.error_len().is_none() && !chunk.closed => e.valid_up_to(),
            Err(e) => {
                return Err(Error::decode(
                    DecodeKind::Utf8,
                    format!("stream data is not valid UTF-8: {e}"),
                ));
            }
        };
        self.pending = bytes.split_off(valid_up_to);
        let text =
            String::from_utf8(bytes).map_err(|e| Error::decode(DecodeKind::Utf8, e.to_string()))?;
        Ok(TextChunk {
            text,
            // Bytes of a split character are carried: the offset is past
            // them, so it is no resume position.
            exact: chunk.exact && self.pending.is_empty(),
            offset: chunk.offset,
            cursor: chunk.cursor,
            up_to_date: chunk.up_to_date,
            closed: chunk.closed,
            status: chunk.status,
        })
    }
}

/// A public `futures::Stream` wrapper around a boxed stream of `Result`s.
macro_rules! boxed_stream {
    ($(#[$doc:meta])* $name:ident < $($gen:ident)? >, $item:ty) => {
        $(#[$doc])*
        pub struct $name<$($gen)?> {
            inner: ::std::pin::Pin<Box<dyn ::futures::Stream<Item = $crate::error::Result<$item>> + Send>>,
            $(_type: ::std::marker::PhantomData<fn() -> $gen>,)?
        }

        impl<$($gen)?> ::futures::Stream for $name<$($gen)?> {
            type Item = $crate::error::Result<$item>;
            fn poll_next(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<Option<Self::Item>> {
                self.inner.as_mut().poll_next(cx)
            }
        }

        impl<$($gen)?> ::std::fmt::Debug for $name<$($gen)?> {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }
    };
}

pub(crate) use boxed_stream;

boxed_stream!(
    /// A `futures::Stream` of [`Chunk`]s. Ends after the closing chunk, after
    /// catching up (for [`LiveMode::Off`]), or after an error.
    ChunkStream<>, Chunk
);
boxed_stream!(
    /// A `futures::Stream` of [`TextChunk`]s.
    TextStream<>, TextChunk
);
boxed_stream!(
    /// A `futures::Stream` of [`JsonBatch`]es of `T`.
    JsonStream<T>, JsonBatch<T>
);

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(data: &'static [u8], closed: bool) -> Chunk {
        Chunk {
            data: Bytes::from_static(data),
            offset: Offset::parse("o").unwrap(),
            exact: true,
            cursor: None,
            up_to_date: false,
            closed,
            status: 200,
            messages: None,
            typed_bytes: None,
        }
    }

    #[test]
    fn utf8_split_across_chunks_is_carried() {
        let mut carry = Utf8Carry::default();
        let a = carry.decode(chunk(&[b'a', 0xE2, 0x82], false)).unwrap();
        assert_eq!(a.text, "a");
        // Carried bytes: the chunk's offset is past them, no resume point.
        assert!(!a.exact);
        let b = carry.decode(chunk(&[0xAC, b'b'], false)).unwrap();
        assert_eq!(b.text, "€b");
        assert!(b.exact);
    }

    #[test]
    fn every_split_point_of_multibyte_text_round_trips() {
        const TEXT: &str = "a€ü𝄞b";
        let bytes: &'static [u8] = TEXT.as_bytes();
        for cut in 0..=bytes.len() {
            let mut carry = Utf8Carry::default();
            let first = carry.decode(chunk(&bytes[..cut], false)).unwrap();
            let second = carry.decode(chunk(&bytes[cut..], true)).unwrap();
            assert_eq!(first.text + &second.text, TEXT, "cut at {cut}");
            assert_eq!(first.exact, TEXT.is_char_boundary(cut), "cut at {cut}");
            assert!(second.exact, "cut at {cut}");
        }
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut carry = Utf8Carry::default();
        let err = carry.decode(chunk(&[0xFF, b'a'], false)).unwrap_err();
        assert_eq!(err.kind(), &crate::ErrorKind::Decode(DecodeKind::Utf8));
        let mut carry = Utf8Carry::default();
        let err = carry.decode(chunk(&[b'a', 0xE2], true)).unwrap_err();
        assert_eq!(err.kind(), &crate::ErrorKind::Decode(DecodeKind::Utf8));
    }
}
