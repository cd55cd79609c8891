//! The options and results of the stream operations, and the stream
//! metadata HEAD returns.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{JSON_CONTENT_TYPE, Stream};
use crate::error::{Error, Result};
use crate::offset::Offset;
use crate::request::{RequestSpec, names};

pub(crate) fn is_json_content_type(ct: &str) -> bool {
    ct.split(';')
        .next()
        .is_some_and(|base| base.trim().eq_ignore_ascii_case(JSON_CONTENT_TYPE))
}

/// When a stream expires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// No expiry (the default).
    #[default]
    Never,
    /// A sliding window, reset by every read and write (`Stream-TTL`, whole seconds).
    Ttl(Duration),
    /// An absolute deadline (`Stream-Expires-At`, RFC 3339).
    At(SystemTime),
}

impl Expiry {
    pub(super) fn apply(&self, spec: RequestSpec) -> Result<RequestSpec> {
        match self {
            Expiry::Never => Ok(spec),
            Expiry::Ttl(d) => {
                if d.subsec_nanos() != 0 {
                    return Err(Error::invalid_argument("ttl", "TTL must be whole seconds"));
                }
                spec.header(names::TTL, d.as_secs().to_string())
            }
            Expiry::At(t) => spec.header(
                names::EXPIRES_AT,
                humantime::format_rfc3339_millis(*t).to_string(),
            ),
        }
    }
}

/// Options for [`Stream::create_with`].
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub(super) content_type: Option<String>,
    pub(super) expiry: Expiry,
    pub(super) body: Option<Bytes>,
    pub(super) closed: bool,
    pub(super) fork: Option<ForkOptions>,
}

impl CreateOptions {
    /// Defaults: the handle's content type (or the server's default), no expiry, empty, open.
    pub fn new() -> Self {
        Self::default()
    }

    /// A JSON (message mode) stream.
    pub fn json() -> Self {
        Self::new().content_type(JSON_CONTENT_TYPE)
    }

    /// The stream's content type.
    pub fn content_type(mut self, ct: impl Into<String>) -> Self {
        self.content_type = Some(ct.into());
        self
    }

    /// A sliding time-to-live, in whole seconds.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.expiry = Expiry::Ttl(ttl);
        self
    }

    /// An absolute expiry time.
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expiry = Expiry::At(at);
        self
    }

    /// Initial content.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Create the stream already closed (with the body as its whole content).
    pub fn closed(mut self, closed: bool) -> Self {
        self.closed = closed;
        self
    }
}

/// Where a fork branches from (PROTOCOL.md 4.2).
#[derive(Debug, Clone)]
pub struct ForkOptions {
    pub(super) source_path: String,
    pub(super) offset: Option<Offset>,
    pub(super) sub_offset: Option<u64>,
}

impl ForkOptions {
    /// Fork the given stream (which must be on the same server).
    pub fn from_stream(source: &Stream) -> Self {
        Self::from_path(source.url().path())
    }

    /// Fork the stream at this URL path on the same server.
    pub fn from_path(path: impl Into<String>) -> Self {
        ForkOptions {
            source_path: path.into(),
            offset: None,
            sub_offset: None,
        }
    }

    /// Divergence point (default: the source's tail). Must be an offset the server returned.
    pub fn offset(mut self, offset: Offset) -> Self {
        self.offset = Some(offset);
        self
    }

    /// Refine the divergence point past `offset`: messages for JSON streams,
    /// bytes otherwise.
    pub fn sub_offset(mut self, sub_offset: u64) -> Self {
        self.sub_offset = Some(sub_offset);
        self
    }
}

/// Options for [`Stream::append_with`].
///
/// Start from [`AppendOptions::new`] (or [`AppendOptions::json`]) and chain
/// the setters; the fields are readable, and the struct is
/// `#[non_exhaustive]` so options can be added later.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AppendOptions {
    /// `Stream-Seq`: an opaque, strictly increasing (byte-wise) writer sequence.
    pub seq: Option<String>,
    /// Close the stream atomically with this append.
    pub close: bool,
    /// Content type for this append (default: the stream's).
    pub content_type: Option<String>,
    /// Retry even when a broken connection leaves the outcome unknown (may
    /// write twice). Off by default.
    pub retry_unknown_outcome: bool,
}

impl AppendOptions {
    /// Defaults: no `Stream-Seq`, no close, the stream's content type, no
    /// retry when the outcome is unknown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Options for a JSON append.
    pub fn json() -> Self {
        AppendOptions {
            content_type: Some(JSON_CONTENT_TYPE.to_owned()),
            ..AppendOptions::default()
        }
    }

    /// Set `Stream-Seq`.
    pub fn seq(mut self, seq: impl Into<String>) -> Self {
        self.seq = Some(seq.into());
        self
    }

    /// Close the stream atomically with this append.
    pub fn close(mut self, close: bool) -> Self {
        self.close = close;
        self
    }

    /// Content type for this append (default: the stream's).
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Retry even when a broken connection leaves the outcome unknown (may
    /// write twice).
    pub fn retry_unknown_outcome(mut self, retry: bool) -> Self {
        self.retry_unknown_outcome = retry;
        self
    }
}

/// What [`Stream::create_with`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreateResult {
    /// True for 201 Created; false when the stream already existed with the same configuration.
    pub created: bool,
    /// The tail offset after any initial content.
    pub next_offset: Option<Offset>,
    /// The stream's content type.
    pub content_type: Option<String>,
    /// Whether the stream is closed.
    pub closed: bool,
}

/// What an append returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppendResult {
    /// The new tail offset. `None` when the server applied the write but its
    /// answer carried no valid `Stream-Next-Offset` (a proxy stripping
    /// headers): the write is done, only its offset is unknown.
    pub next_offset: Option<Offset>,
    /// Whether the stream is now closed.
    pub closed: bool,
}

/// What a close returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseResult {
    /// The final offset of the stream, when the server reported it.
    pub final_offset: Option<Offset>,
}

/// Stream metadata from HEAD.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamInfo {
    /// The tail offset.
    pub next_offset: Offset,
    /// The stream's content type.
    pub content_type: Option<String>,
    /// The sliding TTL, if any.
    pub ttl: Option<Duration>,
    /// The absolute expiry, if any and if it parsed as RFC 3339.
    pub expires_at: Option<SystemTime>,
    /// The raw `Stream-Expires-At` header.
    pub expires_at_raw: Option<String>,
    /// Whether the stream is closed.
    pub closed: bool,
    /// The ETag, if the server sent one.
    pub etag: Option<String>,
}

#[cfg(test)]
mod tests {
    use reqwest::Method;

    use super::*;

    #[test]
    fn json_content_type_detection() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(!is_json_content_type("application/ndjson"));
    }

    #[test]
    fn ttl_must_be_whole_seconds() {
        let spec = RequestSpec::new(Method::PUT, "t");
        let err = Expiry::Ttl(Duration::from_millis(1500))
            .apply(spec)
            .unwrap_err();
        assert_eq!(
            err.kind(),
            &crate::ErrorKind::InvalidArgument { field: "ttl" }
        );
    }
}
