//! Typed binary messages: a [`Codec`] turns items into bytes and back, and
//! a length-delimited framing keeps message boundaries on binary streams
//! (which the protocol stores as a plain concatenation of bytes).
//!
//! - Codecs: [`JsonCodec`] (serde_json), [`BytesCodec`] (identity),
//!   `ProstCodec` (Protobuf through prost, feature `protobuf`) and
//!   `AvroCodec` (Avro datums checked against a user-given schema, feature
//!   `avro`).
//! - [`Framed`]: a codec plus its [`Framing`] (size limit, per-frame
//!   compression). Write with [`Stream::append_frame`](crate::Stream::append_frame)
//!   (one frame per request) or [`Producer::send_frame`](crate::Producer::send_frame)
//!   (frames batched, never split across requests); read with
//!   [`ReadBuilder::frames`](crate::ReadBuilder::frames) in every
//!   [`LiveMode`](crate::LiveMode), [`Pipeline::framed`](crate::pipeline::Pipeline::framed)
//!   or a consumer whose handler uses [`Frames<C>`](crate::consumer::Frames)
//!   (the codec given with [`ConsumerBuilder::framed`](crate::consumer::ConsumerBuilder::framed)).
//!
//! JSON streams (`application/json`) stay plain JSON: the server splits
//! their messages itself; use the JSON reads and writes for them. Framing is
//! for binary streams (`application/octet-stream` or any other non-JSON type).
//!
//! # Wire format
//!
//! A framed stream is a sequence of frames, each:
//!
//! ```text
//! frame   = length flags payload
//! length  = unsigned LEB128 varint: byte length of flags + payload (>= 1),
//!           minimal encoding, at most 10 bytes
//! flags   = one byte: 0 plain, 1 zstd (one or more zstd frames),
//!           2 gzip (RFC 1952); any other value is an error
//! payload = length - 1 bytes: the encoded message, compressed per flags
//! ```
//!
//! A reader in any language, in a few lines:
//!
//! ```text
//! buf = bytes carried from earlier reads + new bytes
//! loop:
//!     (len, n) = read_uvarint(buf)        # 7 bits per byte, low first, high bit = more
//!     if incomplete: break                # wait for more bytes
//!     if len == 0 or len - 1 > MAX: error
//!     if size(buf) < n + len: break       # frame not complete yet
//!     flags = buf[n]; payload = buf[n+1 : n+len]
//!     if flags == 1: payload = zstd_decompress(payload, limit=MAX)
//!     elif flags == 2: payload = gunzip(payload, limit=MAX)
//!     elif flags != 0: error
//!     emit(decode_message(payload)); buf = buf[n+len:]
//! ```
//!
//! Writers compress a payload only when it is at least
//! [`Framing::compress_threshold`] bytes long and the compressed form is
//! smaller, so one stream mixes plain and compressed frames and stays
//! readable by every reader. Compression is per frame; the server's own
//! HTTP response compression (the crate's `gzip`/`zstd` features, which
//! negotiate `Accept-Encoding`) is independent and applies on top: for
//! already-compressed frames it gains nothing, for plain frames it saves
//! bandwidth but not storage, and the server pays for it on every read.
//! Measured on loopback against the Node reference server 0.3.7 (the Rust
//! server 0.1.5 never compresses responses): a 16.5 MB catch-up of text
//! messages took 60 ms plain and 210-245 ms gzip-encoded (1.6 MB on the
//! wire). Frame compression is paid once, by the writer, and shrinks what
//! is stored as well as what is sent.
//!
//! # Positions
//!
//! A [`FrameBatch`]'s offset is an exact resume position only when the
//! chunk it came from was exact and no partial frame is carried past it;
//! consumers and pipelines commit only those. Errors about a frame
//! ([`ErrorKind::FrameTooLarge`](crate::ErrorKind::FrameTooLarge),
//! [`ErrorKind::TruncatedFrame`](crate::ErrorKind::TruncatedFrame),
//! [`ErrorKind::UnsupportedFrame`](crate::ErrorKind::UnsupportedFrame),
//! `Decode(Frame)`) name the last exact offset before the frame and the
//! frame's distance from it in bytes.
//!
//! # Schemas and registries
//!
//! `ProstCodec` checks messages against their Protobuf type;
//! `AvroCodec` validates every value against its schema on encode and on
//! decode. No schema registry is needed. To plug one in, write a [`Codec`]
//! whose payload starts with a schema id (for example the Confluent layout:
//! a zero byte and a 4-byte big-endian id): `encode` writes the id of the
//! writer's schema then the datum, `decode` reads the id, looks the schema up
//! in a local cache filled from the registry (fetch it before reading, since
//! `decode` is synchronous), and decodes with it.
//!
//! # Example
//!
//! ```no_run
//! use durable_streams_client::codec::{Compression, Framed, Framing, JsonCodec};
//! use durable_streams_client::{Client, CreateOptions, LiveMode, Offset};
//! use futures::StreamExt;
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug)]
//! struct Reading { sensor: String, values: Vec<f64> }
//!
//! # async fn demo() -> durable_streams_client::Result<()> {
//! let stream = Client::new().stream("http://127.0.0.1:4437/v1/stream/readings")?;
//! stream.create_with(CreateOptions::default().content_type("application/octet-stream")).await?;
//! // Compress payloads of 1 KiB and more (needs the `frame-zstd` feature).
//! let framed = Framed::new(JsonCodec::<Reading>::new())
//!     .framing(Framing::new().compression(Compression::zstd()));
//! let reading = Reading { sensor: "a".into(), values: vec![1.0; 1000] };
//! stream.append_frame(&framed, &reading).await?;
//!
//! let mut batches = stream.read().offset(Offset::start()).live(LiveMode::Auto).frames(framed);
//! while let Some(batch) = batches.next().await {
//!     let batch = batch?;
//!     println!("{:?}", batch.items);
//!     if batch.exact { /* checkpoint batch.offset */ }
//!     if batch.up_to_date { break; }
//! }
//! # Ok(()) }
//! ```

#[cfg(feature = "avro")]
mod avro;
mod frame;
#[cfg(feature = "protobuf")]
mod protobuf;
mod read;
#[cfg(test)]
mod tests;

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[cfg(feature = "avro")]
pub use self::avro::AvroCodec;
pub use self::frame::{
    Compression, DEFAULT_COMPRESS_THRESHOLD, DEFAULT_MAX_FRAME_BYTES, FLAG_GZIP, FLAG_PLAIN,
    FLAG_ZSTD, FrameDecoder, Framing,
};
#[cfg(feature = "protobuf")]
pub use self::protobuf::ProstCodec;
pub use self::read::{FrameBatch, FrameStream};
use crate::error::{DecodeKind, Error, Result};
use crate::offset::Offset;

/// Turns items into bytes and back.
pub trait Codec: Send + Sync + 'static {
    /// The message type.
    type Item: Send + 'static;

    /// Append the encoding of `item` to `out`. A failure is an
    /// `InvalidArgument` error (field `item`).
    fn encode(&self, item: &Self::Item, out: &mut Vec<u8>) -> Result<()>;

    /// Decode one message's payload. A failure is a `Decode` error.
    fn decode(&self, payload: Bytes) -> Result<Self::Item>;
}

/// JSON through serde (UTF-8 JSON text per message).
pub struct JsonCodec<T>(PhantomData<fn() -> T>);

impl<T> JsonCodec<T> {
    /// The codec.
    pub fn new() -> Self {
        JsonCodec(PhantomData)
    }
}

impl<T> Default for JsonCodec<T> {
    fn default() -> Self {
        JsonCodec::new()
    }
}

impl<T> Clone for JsonCodec<T> {
    fn clone(&self) -> Self {
        JsonCodec::new()
    }
}

impl<T> fmt::Debug for JsonCodec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonCodec<{}>", std::any::type_name::<T>())
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Codec for JsonCodec<T> {
    type Item = T;

    fn encode(&self, item: &T, out: &mut Vec<u8>) -> Result<()> {
        crate::json_encode::write(out, item)
            .map_err(|e| Error::invalid_argument("item", e.to_string()))
    }

    fn decode(&self, payload: Bytes) -> Result<T> {
        serde_json::from_slice(&payload)
            .map_err(|e| Error::decode(DecodeKind::Json, format!("frame payload: {e}")))
    }
}

/// Bytes as they are (framing alone).
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Item = Bytes;

    fn encode(&self, item: &Bytes, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(item);
        Ok(())
    }

    fn decode(&self, payload: Bytes) -> Result<Bytes> {
        Ok(payload)
    }
}

/// A [`Codec`] with its [`Framing`]: what framed reads and writes take.
/// Cheap to clone (the codec is shared).
pub struct Framed<C> {
    codec: Arc<C>,
    framing: Framing,
}

impl<C> Clone for Framed<C> {
    fn clone(&self) -> Self {
        Framed {
            codec: Arc::clone(&self.codec),
            framing: self.framing,
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for Framed<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framed")
            .field("codec", &self.codec)
            .field("framing", &self.framing)
            .finish()
    }
}

impl<C: Codec> Framed<C> {
    /// `codec` with the default [`Framing`] (plain frames, 16 MiB limit).
    pub fn new(codec: C) -> Self {
        Framed {
            codec: Arc::new(codec),
            framing: Framing::default(),
        }
    }

    /// Replace the framing settings.
    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// The framing settings.
    pub fn settings(&self) -> &Framing {
        &self.framing
    }

    /// Append `item` as one frame to `out`.
    pub fn encode(&self, item: &C::Item, out: &mut Vec<u8>) -> Result<()> {
        let mut payload = Vec::new();
        self.codec.encode(item, &mut payload)?;
        self.framing.encode_frame(&payload, out)
    }

    /// `item` as one frame.
    pub fn to_frame(&self, item: &C::Item) -> Result<Bytes> {
        let mut out = Vec::new();
        self.encode(item, &mut out)?;
        Ok(Bytes::from(out))
    }

    /// Decode one payload, naming the resume offset in a failure.
    pub(crate) fn decode_payload(&self, payload: Bytes, near: &Offset) -> Result<C::Item> {
        self.codec.decode(payload).map_err(|e| {
            let message = format!(
                "{} (frame after offset {near})",
                e.message().unwrap_or("undecodable payload")
            );
            e.with_message(message)
        })
    }
}
