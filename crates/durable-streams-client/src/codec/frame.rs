//! The frame wire format: varint length, flags byte, payload; per-frame
//! compression; the incremental [`FrameDecoder`].

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::error::{DecodeKind, Error, ErrorKind, Result};
use crate::offset::Offset;
use crate::read::Chunk;

/// Default [`Framing::max_frame_bytes`]: 16 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Default [`Framing::compress_threshold`]: 1 KiB.
pub const DEFAULT_COMPRESS_THRESHOLD: usize = 1024;

/// Flags byte: the payload is stored as is.
pub const FLAG_PLAIN: u8 = 0;
/// Flags byte: the payload is a zstd frame.
pub const FLAG_ZSTD: u8 = 1;
/// Flags byte: the payload is a gzip member.
pub const FLAG_GZIP: u8 = 2;

/// The longest LEB128 encoding of a `u64`.
const MAX_VARINT_BYTES: usize = 10;

/// How frames are compressed when written. Readers accept every flag
/// whatever this says (a stream may mix them), as long as the matching
/// feature is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Never compress (flags byte 0).
    #[default]
    None,
    /// zstd at `level` (1..=22; 3 is zstd's default). Needs the
    /// `frame-zstd` feature to write and to read.
    Zstd {
        /// The zstd compression level.
        level: i32,
    },
    /// gzip (flags byte 2). Needs the `frame-gzip` feature.
    Gzip,
}

impl Compression {
    /// zstd at its default level (3).
    pub fn zstd() -> Self {
        Compression::Zstd { level: 3 }
    }
}

/// Frame settings: the size limit (for writes and reads) and the
/// compression of written frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    max_frame_bytes: usize,
    compression: Compression,
    compress_threshold: usize,
}

impl Default for Framing {
    fn default() -> Self {
        Framing {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            compression: Compression::None,
            compress_threshold: DEFAULT_COMPRESS_THRESHOLD,
        }
    }
}

impl Framing {
    /// Plain frames, [`DEFAULT_MAX_FRAME_BYTES`].
    pub fn new() -> Self {
        Framing::default()
    }

    /// The largest payload, stored and decompressed alike (default
    /// [`DEFAULT_MAX_FRAME_BYTES`]). A reader meeting a larger frame fails
    /// with [`ErrorKind::FrameTooLarge`] before buffering it; decompression
    /// stops at the limit (a compression bomb costs at most this much memory).
    pub fn max_frame_bytes(mut self, n: usize) -> Self {
        self.max_frame_bytes = n;
        self
    }

    /// Compression of written frames (default [`Compression::None`]).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Compress only payloads of at least this many bytes (default
    /// [`DEFAULT_COMPRESS_THRESHOLD`]). A compressed form that is not
    /// smaller than the payload is dropped and the frame written plain.
    pub fn compress_threshold(mut self, n: usize) -> Self {
        self.compress_threshold = n;
        self
    }

    /// The configured limit.
    pub fn limit(&self) -> usize {
        self.max_frame_bytes
    }

    /// Append one frame holding `payload` to `out` (compressed when
    /// configured and worth it). A payload over the limit, or a compression
    /// whose feature is off, is an `InvalidArgument` error (field `item`).
    pub fn encode_frame(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if payload.len() > self.max_frame_bytes {
            return Err(Error::invalid_argument(
                "item",
                format!(
                    "encoded message of {} bytes exceeds the {}-byte frame limit",
                    payload.len(),
                    self.max_frame_bytes
                ),
            ));
        }
        let compressed = if payload.len() >= self.compress_threshold {
            compress(self.compression, payload)?
        } else {
            None
        };
        let (flag, body) = match &compressed {
            Some((flag, body)) if body.len() < payload.len() => (*flag, body.as_slice()),
            _ => (FLAG_PLAIN, payload),
        };
        put_varint(out, body.len() as u64 + 1);
        out.push(flag);
        out.extend_from_slice(body);
        Ok(())
    }

    /// A decoder for a read starting at `start` (named by errors).
    pub fn decoder(&self, start: Offset) -> FrameDecoder {
        FrameDecoder {
            max: self.max_frame_bytes,
            buf: BytesMut::new(),
            need: None,
            resume: start,
            since_resume: 0,
            #[cfg(feature = "frame-zstd")]
            zstd: None,
        }
    }
}

/// Append the unsigned LEB128 encoding of `n`.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Parse a LEB128 varint at the start of `data`: `Ok(None)` when more bytes
/// are needed, `Err(why)` when malformed (over 10 bytes, over `u64`, or not
/// minimal).
pub(crate) fn parse_varint(data: &[u8]) -> std::result::Result<Option<(u64, usize)>, &'static str> {
    let mut value: u64 = 0;
    for (i, &byte) in data.iter().enumerate().take(MAX_VARINT_BYTES) {
        let bits = u64::from(byte & 0x7F);
        if i == MAX_VARINT_BYTES - 1 && byte > 1 {
            return Err("length varint overflows 64 bits");
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err("length varint is not minimal (overlong encoding)");
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if data.len() >= MAX_VARINT_BYTES {
        return Err("length varint longer than 10 bytes");
    }
    Ok(None)
}

#[cfg(feature = "frame-zstd")]
thread_local! {
    /// One zstd context per thread and level: making a context costs more
    /// than compressing a frame of a few KiB.
    static ZSTD_COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

#[cfg(feature = "frame-zstd")]
fn zstd_compress(level: i32, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    ZSTD_COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if !matches!(&*slot, Some((l, _)) if *l == level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        match &mut *slot {
            Some((_, compressor)) => compressor.compress(payload),
            None => zstd::bulk::compress(payload, level),
        }
    })
}

#[allow(unused_variables)]
fn compress(compression: Compression, payload: &[u8]) -> Result<Option<(u8, Vec<u8>)>> {
    match compression {
        Compression::None => Ok(None),
        #[cfg(feature = "frame-zstd")]
        Compression::Zstd { level } => zstd_compress(level, payload)
            .map(|c| Some((FLAG_ZSTD, c)))
            .map_err(|e| Error::invalid_argument("compression", format!("zstd failed: {e}"))),
        #[cfg(feature = "frame-gzip")]
        Compression::Gzip => {
            use std::io::Write as _;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(payload)
                .and_then(|()| enc.finish())
                .map(|c| Some((FLAG_GZIP, c)))
                .map_err(|e| Error::invalid_argument("compression", format!("gzip failed: {e}")))
        }
        #[allow(unreachable_patterns)]
        other => Err(Error::invalid_argument(
            "compression",
            format!("{other:?} needs the `{}` feature", feature_of(other)),
        )),
    }
}

fn feature_of(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "frame-gzip",
        _ => "frame-zstd",
    }
}

/// Reassembles frames from consecutive pieces of one read's bytes.
///
/// A pure state machine: feed it the read's chunks in order (the bytes of
/// one read session are continuous across reconnects). Errors name
/// [`FrameDecoder::resume_offset`]: the last exact offset at which no frame
/// was carried (the read's start offset before any), a resume position at
/// or before the bad frame, plus the frame's byte distance from it.
pub struct FrameDecoder {
    max: usize,
    /// Bytes of an incomplete frame.
    buf: BytesMut,
    /// The carried frame's total length, once its header is complete.
    need: Option<usize>,
    resume: Offset,
    since_resume: u64,
    /// One zstd context for every frame of the read (a context per frame
    /// costs more than decompressing a small frame).
    #[cfg(feature = "frame-zstd")]
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("max", &self.max)
            .field("carried", &self.buf.len())
            .field("resume", &self.resume)
            .finish_non_exhaustive()
    }
}

enum Parsed {
    /// A whole frame of `len` bytes: payload at `start..len`.
    Frame { len: usize, start: usize },
    /// Needs more bytes; the total is known once the header is complete.
    Partial(Option<usize>),
}

impl FrameDecoder {
    /// Bytes of an incomplete frame carried to the next piece.
    pub fn carried(&self) -> usize {
        self.buf.len()
    }

    /// The last exact offset at which no partial frame was carried.
    pub fn resume_offset(&self) -> &Offset {
        &self.resume
    }

    /// Decode every frame completed by `data`, appending the (decompressed)
    /// payloads to `out`. Bytes of an incomplete frame are carried.
    pub fn push(&mut self, data: Bytes, out: &mut Vec<Bytes>) -> Result<()> {
        let mut input = if self.buf.is_empty() {
            data
        } else {
            self.buf.extend_from_slice(&data);
            if matches!(self.need, Some(n) if self.buf.len() < n) {
                return Ok(());
            }
            self.need = None;
            self.buf.split().freeze()
        };
        while !input.is_empty() {
            match self.parse(&input)? {
                Parsed::Frame { len, start } => {
                    let frame = input.split_to(len);
                    let payload = self.unpack(frame[start - 1], frame.slice(start..))?;
                    self.since_resume += len as u64;
                    out.push(payload);
                }
                Parsed::Partial(need) => {
                    self.need = need;
                    self.buf.extend_from_slice(&input);
                    break;
                }
            }
        }
        Ok(())
    }

    /// The end of the data: carried bytes make a truncated frame
    /// ([`ErrorKind::TruncatedFrame`]).
    pub fn finish(&self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        Err(Error::new(ErrorKind::TruncatedFrame {
            offset: self.resume.clone(),
        })
        .with_message(format!(
            "the stream ends inside a frame: {} bytes of it, starting {} bytes after offset {}",
            self.buf.len(),
            self.since_resume,
            self.resume
        )))
    }

    /// Decode a read chunk: its frames' payloads; marks the chunk inexact
    /// while a frame is carried and fails on a truncated frame at a
    /// closed stream's end.
    pub(crate) fn decode_chunk(&mut self, chunk: &mut Chunk) -> Result<Vec<Bytes>> {
        let mut out = Vec::new();
        self.push(chunk.data.clone(), &mut out)?;
        if chunk.closed {
            self.finish()?;
        }
        chunk.exact = chunk.exact && self.buf.is_empty();
        if chunk.exact {
            self.resume = chunk.offset.clone();
            self.since_resume = 0;
        }
        Ok(out)
    }

    fn malformed(&self, why: &str) -> Error {
        Error::decode(
            DecodeKind::Frame,
            format!(
                "{why} (frame {} bytes after offset {})",
                self.since_resume, self.resume
            ),
        )
    }

    fn parse(&self, input: &[u8]) -> Result<Parsed> {
        let Some((len, header)) = parse_varint(input).map_err(|why| self.malformed(why))? else {
            return Ok(Parsed::Partial(None));
        };
        if len == 0 {
            return Err(self.malformed("frame length 0 (no flags byte)"));
        }
        let payload = len - 1;
        if payload > self.max as u64 {
            return Err(Error::new(ErrorKind::FrameTooLarge {
                limit: self.max,
                offset: self.resume.clone(),
            })
            .with_message(format!(
                "a frame of {payload} bytes, {} bytes after offset {}",
                self.since_resume, self.resume
            )));
        }
        // `payload <= max: usize`, so these fit.
        let total = header + len as usize;
        if input.len() < total {
            return Ok(Parsed::Partial(Some(total)));
        }
        Ok(Parsed::Frame {
            len: total,
            start: header + 1,
        })
    }

    fn unpack(&mut self, flag: u8, body: Bytes) -> Result<Bytes> {
        match flag {
            FLAG_PLAIN => Ok(body),
            FLAG_ZSTD => self.zstd(body),
            FLAG_GZIP => self.gzip(body),
            other => Err(self.malformed(&format!("unknown frame flags byte {other}"))),
        }
    }

    #[cfg(feature = "frame-zstd")]
    fn zstd(&mut self, body: Bytes) -> Result<Bytes> {
        use bytes::Buf as _;
        // A frame that records its size within the limit is decompressed
        // in one call with the read's context, into exactly that much
        // memory; anything else (no size recorded, several zstd frames,
        // a size that lies) takes the bounded streaming path.
        if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(&body)
            && size <= self.max as u64
        {
            let context = match &mut self.zstd {
                Some(context) => Some(context),
                slot => zstd::bulk::Decompressor::new().ok().map(|d| slot.insert(d)),
            };
            if let Some(context) = context
                && let Ok(out) = context.decompress(&body, size as usize)
                && out.len() as u64 == size
            {
                return Ok(Bytes::from(out));
            }
        }
        let decoder = zstd::stream::read::Decoder::new(body.reader());
        self.bounded(
            decoder.map_err(|e| self.malformed(&format!("bad zstd frame: {e}")))?,
            "zstd",
        )
    }

    #[cfg(not(feature = "frame-zstd"))]
    fn zstd(&mut self, _body: Bytes) -> Result<Bytes> {
        Err(self.unsupported(FLAG_ZSTD, "zstd", "frame-zstd"))
    }

    #[cfg(feature = "frame-gzip")]
    fn gzip(&self, body: Bytes) -> Result<Bytes> {
        use bytes::Buf as _;
        self.bounded(flate2::read::GzDecoder::new(body.reader()), "gzip")
    }

    #[cfg(not(feature = "frame-gzip"))]
    fn gzip(&self, _body: Bytes) -> Result<Bytes> {
        Err(self.unsupported(FLAG_GZIP, "gzip", "frame-gzip"))
    }

    #[allow(dead_code)]
    fn unsupported(&self, flag: u8, name: &str, feature: &str) -> Error {
        Error::new(ErrorKind::UnsupportedFrame {
            flag,
            offset: self.resume.clone(),
        })
        .with_message(format!(
            "a {name}-compressed frame {} bytes after offset {}: enable the `{feature}` feature",
            self.since_resume, self.resume
        ))
    }

    /// Decompress, stopping one byte past the limit.
    #[allow(dead_code)]
    fn bounded(&self, reader: impl std::io::Read, name: &str) -> Result<Bytes> {
        use std::io::Read as _;
        let mut out = Vec::new();
        let limit = self.max as u64 + 1;
        reader
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| self.malformed(&format!("bad {name} frame: {e}")))?;
        if out.len() > self.max {
            return Err(Error::new(ErrorKind::FrameTooLarge {
                limit: self.max,
                offset: self.resume.clone(),
            })
            .with_message(format!(
                "a {name} frame decompresses past the limit, {} bytes after offset {}",
                self.since_resume, self.resume
            )));
        }
        Ok(Bytes::from(out))
    }
}
