//! SSE reads over plain HTTP/1.1, each on a connection of its own, without
//! hyper's per-connection machinery.
//!
//! Why: a hyper HTTP/1.1 connection allocates, whatever it carries, an
//! 8 KiB write buffer, a dispatch channel block of about 9 KB and a read
//! buffer of 8 KiB, and runs a task of its own that hands each body piece
//! to the reader through a channel. An SSE read is one GET whose answer
//! streams for minutes: it needs none of that. Here the reader's task
//! reads the socket itself, through a per-thread scratch buffer, so an
//! idle SSE read holds a socket and a few hundred bytes of state, and
//! each piece of body reaches the reader without a task switch.
//!
//! The connection is never reused: an SSE answer ends only when the server
//! closes it or the reader goes away, and a new read opens a new one.
//! Framing follows RFC 9112 section 6: chunked, `content-length`, or read
//! until close; 1xx answers before the real one are skipped.

use std::cell::RefCell;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_service::Service;

use super::HttpError;

/// Largest response head accepted (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Most headers in a response head.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions) or trailer section.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 64 * 1024;
/// The per-thread scratch buffer every SSE socket read goes through, and
/// so the most one read takes.
pub(crate) const SCRATCH: usize = 64 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The request: an SSE GET, already a head of bytes.
pub(crate) struct EventRequest {
    pub(crate) uri: hyper::Uri,
    pub(crate) head: Vec<u8>,
    /// Bytes read from the socket at most at once.
    pub(crate) read_size: usize,
}

/// The bytes of a GET head for `uri` with `headers` (a `host` header
/// from the URI unless one is given).
pub(crate) fn request_head(uri: &hyper::Uri, headers: &HeaderMap) -> Result<Vec<u8>, HttpError> {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri
        .authority()
        .ok_or_else(|| HttpError::invalid("an SSE request needs a host"))?;
    let mut head = Vec::with_capacity(128 + headers.len() * 48);
    head.extend_from_slice(b"GET ");
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(reqwest::header::HOST) {
        head.extend_from_slice(b"host: ");
        head.extend_from_slice(authority.as_str().as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        // `HeaderValue` holds no CR or LF: nothing can be smuggled in.
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    Ok(head)
}

/// Connect, send the request, and read the answer's head.
pub(crate) async fn open(
    mut connector: HttpConnector,
    req: EventRequest,
) -> Result<(http::response::Parts, EventBody), HttpError> {
    // hyper-util's connector: the same resolver, connect timeout, TCP
    // keepalive and `TCP_NODELAY` as every other plain-HTTP request.
    let io = connector.call(req.uri).await.map_err(HttpError::not_sent)?;
    let mut io = io.into_inner();
    io.write_all(&req.head).await.map_err(HttpError::new)?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Some((parts, used)) = parse_head(&buf)? {
            if parts.status.is_informational() {
                if parts.status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(HttpError::new("unexpected 101 answer to an SSE read"));
                }
                buf = BytesMut::from(&buf[used..]);
                continue;
            }
            // Copied out (usually nothing): an open read keeps no part of
            // the head's buffer.
            let rest = Bytes::copy_from_slice(&buf[used..]);
            let framing = Framing::of(parts.status, &parts.headers)?;
            let body = EventBody::new(io, framing, rest, req.read_size);
            return Ok((parts, body));
        }
        if buf.len() >= MAX_HEAD {
            return Err(HttpError::new("response head larger than 64 KiB"));
        }
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len().min(MAX_HEAD - buf.len()).max(1024));
        }
        let n = io.read_buf(&mut buf).await.map_err(HttpError::new)?;
        if n == 0 {
            return Err(HttpError::new("connection closed before the response head"));
        }
    }
}

/// The head in `buf`, and its length, once it is all there.
fn parse_head(buf: &[u8]) -> Result<Option<(http::response::Parts, usize)>, HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let used = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HttpError::new(format!("invalid response head: {e}"))),
    };
    let code = resp.code.unwrap_or_default();
    let status = StatusCode::from_u16(code)
        .map_err(|_| HttpError::new(format!("invalid status code {code}")))?;
    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HttpError::new(format!("invalid header name {:?}", h.name)))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| HttpError::new(format!("invalid value of header {name}")))?;
        headers.append(name, value);
    }
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = if resp.version == Some(0) {
        http::Version::HTTP_10
    } else {
        http::Version::HTTP_11
    };
    parts.headers = headers;
    Ok(Some((parts, used)))
}

/// How the body's end is found (RFC 9112, 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Chunked(Chunk),
    /// Bytes still to come.
    Length(u64),
    UntilClose,
    Done,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In a chunk-size line.
    Size,
    /// In a chunk's data, with this much still to come.
    Data(u64),
    /// After a chunk's data: its CR, then its LF.
    DataCr,
    DataLf,
    /// In the trailer section after the last chunk.
    Trailers,
}

impl Framing {
    fn of(status: StatusCode, headers: &HeaderMap) -> Result<Self, HttpError> {
        if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Ok(Framing::Done);
        }
        let mut encodings = headers
            .get_all(reqwest::header::TRANSFER_ENCODING)
            .iter()
            .peekable();
        if encodings.peek().is_some() {
            // Chunked only as the last coding; anything else runs to close.
            let last = encodings
                .last()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .map(str::trim);
            return Ok(if last.is_some_and(|c| c.eq_ignore_ascii_case("chunked")) {
                Framing::Chunked(Chunk::Size)
            } else {
                Framing::UntilClose
            });
        }
        let mut length = None;
        for value in headers.get_all(reqwest::header::CONTENT_LENGTH) {
            for part in value.to_str().unwrap_or("x").split(',') {
                let n: u64 = part
                    .trim()
                    .parse()
                    .map_err(|_| HttpError::new("invalid content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(HttpError::new("conflicting content-length values"));
                }
                length = Some(n);
            }
        }
        Ok(match length {
            Some(0) => Framing::Done,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        })
    }
}

/// The body of an SSE answer, read from its own connection.
pub(crate) struct EventBody {
    /// `None` once the body ended (the connection is closed then).
    io: Option<TcpStream>,
    decoder: Decoder,
    /// Body bytes that came with the head, not yet decoded.
    early: Bytes,
    read_size: usize,
    content_length: Option<u64>,
}

/// The body's framing, undone piece by piece.
struct Decoder {
    framing: Framing,
    /// A chunk-size or trailer line cut by a read.
    line: Vec<u8>,
    trailer_bytes: usize,
}

impl EventBody {
    fn new(io: TcpStream, framing: Framing, early: Bytes, read_size: usize) -> Self {
        let content_length = match framing {
            Framing::Length(n) => Some(n),
            Framing::Done => Some(0),
            _ => None,
        };
        EventBody {
            io: (framing != Framing::Done).then_some(io),
            decoder: Decoder::new(framing),
            early,
            read_size: read_size.clamp(1, SCRATCH),
            content_length,
        }
    }

    /// The body's length, when the server said it.
    pub(crate) fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// The next non-empty piece of body; `None` at its end.
    pub(crate) fn poll_piece(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, HttpError>>> {
        let mut piece = BytesMut::new();
        self.poll_read_into(cx, &mut piece)
            .map(|read| read.map(|read| read.map(|()| piece.freeze())))
    }

    /// Decode the next body bytes onto the end of `out` (`Some(Ok(()))`:
    /// at least one byte added); `None` at the body's end. An SSE reader
    /// decodes straight into its parser's buffer: no piece of its own.
    pub(crate) fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut BytesMut,
    ) -> Poll<Option<Result<(), HttpError>>> {
        let before = out.len();
        loop {
            if !self.early.is_empty() {
                // In pieces of the read size, like the reads after it.
                let early = self.early.split_to(self.early.len().min(self.read_size));
                if self.early.is_empty() {
                    self.early = Bytes::new();
                }
                match self.decoder.decode(&early, out) {
                    Ok(()) if out.len() > before => return Poll::Ready(Some(Ok(()))),
                    Ok(()) => continue,
                    Err(e) => return Poll::Ready(Some(Err(self.fail(e)))),
                }
            }
            if self.decoder.framing == Framing::Done {
                self.io = None;
                return Poll::Ready(None);
            }
            let Some(io) = &self.io else {
                return Poll::Ready(None);
            };
            if let Err(e) = std::task::ready!(io.poll_read_ready(cx)) {
                return Poll::Ready(Some(Err(self.fail(HttpError::new(e)))));
            }
            // The scratch buffer is borrowed only inside this call: no
            // await in between, so one per thread serves every read.
            let read = SCRATCH_BUF.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                if scratch.len() < self.read_size {
                    scratch.resize(SCRATCH, 0);
                }
                let buf = &mut scratch[..self.read_size];
                match io.try_read(buf) {
                    Ok(0) => Some(self.decoder.at_eof()),
                    Ok(n) => Some(self.decoder.decode(&buf[..n], out)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                    Err(e) => Some(Err(HttpError::new(e))),
                }
            });
            match read {
                // Readiness was stale: wait again.
                None => continue,
                Some(Ok(())) if out.len() > before => return Poll::Ready(Some(Ok(()))),
                // Framing only, or the end (seen as `Done` above).
                Some(Ok(())) => continue,
                Some(Err(e)) => return Poll::Ready(Some(Err(self.fail(e)))),
            }
        }
    }

    fn fail(&mut self, e: HttpError) -> HttpError {
        self.io = None;
        self.decoder.framing = Framing::Done;
        e
    }
}

impl Decoder {
    fn new(framing: Framing) -> Self {
        Decoder {
            framing,
            line: Vec::new(),
            trailer_bytes: 0,
        }
    }

    /// The connection closed: the end, if the framing says it may be.
    fn at_eof(&mut self) -> Result<(), HttpError> {
        match self.framing {
            Framing::UntilClose | Framing::Done => {
                self.framing = Framing::Done;
                Ok(())
            }
            _ => Err(HttpError::new(
                "connection closed before the response body ended",
            )),
        }
    }

    /// Undo the framing of `input` (one read), adding the body bytes to `out`.
    fn decode(&mut self, mut input: &[u8], out: &mut BytesMut) -> Result<(), HttpError> {
        while !input.is_empty() {
            match &mut self.framing {
                Framing::Done => return Ok(()),
                Framing::UntilClose => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                Framing::Length(left) => {
                    let n = input
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    if out.is_empty() {
                        out.reserve(n);
                    }
                    out.extend_from_slice(&input[..n]);
                    *left -= n as u64;
                    if *left == 0 {
                        self.framing = Framing::Done;
                    }
                    input = &input[n..];
                }
                Framing::Chunked(chunk) => match chunk {
                    Chunk::Size => {
                        let Some(line) = take_line(&mut self.line, &mut input, MAX_CHUNK_LINE)?
                        else {
                            continue;
                        };
                        let size = match httparse::parse_chunk_size(line) {
                            Ok(httparse::Status::Complete((_, size))) => size,
                            _ => return Err(HttpError::new("invalid chunk size line")),
                        };
                        self.line.clear();
                        *chunk = if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        };
                    }
                    Chunk::Data(left) => {
                        let n = input
                            .len()
                            .min(usize::try_from(*left).unwrap_or(usize::MAX));
                        if out.is_empty() {
                            out.reserve(input.len());
                        }
                        out.extend_from_slice(&input[..n]);
                        *left -= n as u64;
                        if *left == 0 {
                            *chunk = Chunk::DataCr;
                        }
                        input = &input[n..];
                    }
                    Chunk::DataCr | Chunk::DataLf => {
                        let want = if *chunk == Chunk::DataCr {
                            b'\r'
                        } else {
                            b'\n'
                        };
                        if input[0] != want {
                            return Err(HttpError::new("chunk data not followed by CRLF"));
                        }
                        *chunk = if *chunk == Chunk::DataCr {
                            Chunk::DataLf
                        } else {
                            Chunk::Size
                        };
                        input = &input[1..];
                    }
                    Chunk::Trailers => {
                        let before = input.len();
                        let line = take_line(&mut self.line, &mut input, MAX_CHUNK_LINE)?;
                        let last = line.is_some_and(|l| l == b"\r\n" || l == b"\n");
                        if line.is_some() {
                            self.line.clear();
                        }
                        self.trailer_bytes += before - input.len();
                        if self.trailer_bytes > MAX_TRAILERS {
                            return Err(HttpError::new("response trailers too large"));
                        }
                        if last {
                            self.framing = Framing::Done;
                        }
                    }
                },
            }
        }
        Ok(())
    }
}

/// One whole line (with its LF), advancing `input` past it: from `input`
/// itself when it holds all of it, else from `line` (the caller clears
/// it after use); `None` if `input` ends first (its bytes kept in `line`).
fn take_line<'l, 'i: 'l>(
    line: &'l mut Vec<u8>,
    input: &mut &'i [u8],
    max: usize,
) -> Result<Option<&'l [u8]>, HttpError> {
    let (taken, done) = match memchr::memchr(b'\n', input) {
        Some(i) => (i + 1, true),
        None => (input.len(), false),
    };
    if line.len() + taken > max {
        return Err(HttpError::new("chunk line too long"));
    }
    let (head, rest) = input.split_at(taken);
    *input = rest;
    if line.is_empty() && done {
        return Ok(Some(head));
    }
    line.extend_from_slice(head);
    Ok(done.then_some(line.as_slice()))
}

/// A whole body handed over in `pieces`, as reads would, then its end.
fn decode_all<'a>(
    framing: Framing,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<u8>, HttpError> {
    let mut decoder = Decoder::new(framing);
    let mut out = BytesMut::new();
    for piece in pieces {
        decoder.decode(piece, &mut out)?;
    }
    decoder.at_eof()?;
    Ok(out.to_vec())
}

/// Body of the hidden `__fuzz::http1_response` entry point: parse `data`
/// as a response head, then decode the rest as its body, whole and in the
/// pieces `sizes` cut (cycled). Panics if the two disagree or a body is
/// longer than its input; errors are fine.
pub(crate) fn fuzz_entry(data: &[u8], sizes: &[usize]) {
    let Ok(Some((parts, used))) = parse_head(data) else {
        return;
    };
    let Ok(framing) = Framing::of(parts.status, &parts.headers) else {
        return;
    };
    let body = &data[used..];
    let whole = decode_all(framing, [body]).ok();
    let mut rest = body;
    let mut sizes = sizes.iter().map(|&n| n.max(1)).cycle();
    let mut cut = std::iter::from_fn(|| {
        if rest.is_empty() {
            return None;
        }
        let (piece, after) = rest.split_at(sizes.next().unwrap_or(1).min(rest.len()));
        rest = after;
        Some(piece)
    });
    let pieces = decode_all(framing, &mut cut).ok();
    assert_eq!(whole, pieces, "the cuts changed the body");
    if let Some(whole) = whole {
        assert!(whole.len() <= body.len(), "a body longer than its input");
    }
}

#[cfg(test)]
#[path = "http_events_tests.rs"]
mod tests;
