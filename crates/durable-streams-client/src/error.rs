//! One error type for every operation, with a matchable [`ErrorKind`].

use std::fmt;
use std::time::Duration;

use crate::offset::{InvalidOffset, Offset, Origin};

/// A boxed error accepted as the `source` of an [`Error`].
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The stored source: shared so that one failure can be handed to every
/// caller waiting on the same batch.
type SharedSource = std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the server answered `409 Conflict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConflictReason {
    /// `PUT` on a stream that exists with another configuration (content type,
    /// TTL/expiry, closure status or fork source).
    ExistsWithDifferentConfig,
    /// The request's content type differs from the stream's.
    ContentTypeMismatch,
    /// A `Stream-Seq` value was not greater than the last one written.
    SequenceRegression,
    /// A 409 the client could not attribute to one of the reasons above.
    Other,
}

impl fmt::Display for ConflictReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConflictReason::ExistsWithDifferentConfig => {
                "the stream already exists with another configuration (its content type, \
                 TTL/expiry, closed state or fork source differs from this create; \
                 `Stream::head` shows the stream's)"
            }
            ConflictReason::ContentTypeMismatch => {
                "the content type does not match the stream's (`Stream::head` shows the \
                 stream's; a JSON stream needs `append_json`, or `CreateOptions::json()` \
                 when it is created)"
            }
            ConflictReason::SequenceRegression => "Stream-Seq is not greater than the last one",
            ConflictReason::Other => "conflict",
        })
    }
}

/// What went wrong when decoding something the server sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeKind {
    /// A body that should be JSON was not, or did not match the requested type.
    Json,
    /// A malformed server-sent event stream or control event.
    Sse,
    /// An SSE data event that is not valid base64.
    Base64,
    /// A missing or malformed protocol header.
    Header,
    /// Text that is not valid UTF-8.
    Utf8,
    /// The server's next offset did not move forward (it went backwards, or
    /// data arrived with an unchanged offset); the message names both offsets.
    Offset,
    /// A malformed frame on a framed binary stream ([`codec`](crate::codec)):
    /// a bad length varint, an unknown flags byte or corrupt compressed
    /// data; the message names the offset.
    Frame,
    /// A frame's payload that the [`Codec`](crate::codec::Codec) could not
    /// decode (Protobuf, Avro, or a schema check); the message names the
    /// offset.
    Payload,
}

/// The matchable part of an [`Error`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The stream (or a fork's source) does not exist (404).
    NotFound,
    /// The server answered 409 for a reason other than closure or producer sequencing.
    Conflict(ConflictReason),
    /// The stream is closed; no more appends are accepted.
    StreamClosed {
        /// The stream's final offset, when the server reported it.
        final_offset: Option<Offset>,
    },
    /// An idempotent producer's epoch is older than the server's (403).
    StaleEpoch {
        /// The server's current epoch for this producer.
        current: u64,
    },
    /// An idempotent producer skipped a sequence number (409).
    SequenceGap {
        /// The sequence the server expected.
        expected: u64,
        /// The sequence the request carried.
        received: u64,
    },
    /// The server rejected the request as malformed (400).
    BadRequest,
    /// The stream was deleted while forks keep its data, or the offset is
    /// before the retained data (410).
    Gone,
    /// The request body exceeded the server's limit (413).
    PayloadTooLarge,
    /// A response body exceeded this client's configured limit.
    ResponseTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The server is rate limiting (429) and retries ran out.
    RateLimited {
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The server failed (5xx) and retries ran out.
    Server {
        /// The HTTP status.
        status: u16,
    },
    /// Any other unexpected status (401, 403 outside producers, 405, 501, ...).
    UnexpectedStatus {
        /// The HTTP status.
        status: u16,
    },
    /// The server (or a proxy) answered with a redirect the client may not
    /// follow: any redirect of a write other than 307/308 to the same origin,
    /// or a read redirected to another origin (unless allowed) or from https
    /// to http. Nothing was written through the redirect.
    Redirect {
        /// The HTTP status (301, 302, 303, 307 or 308).
        status: u16,
        /// The `Location` header, without query string or credentials.
        location: Option<String>,
    },
    /// The server refused the credentials (401, or 403 outside producer
    /// fencing), and no token-refresh hook made the request succeed.
    Unauthorized {
        /// The HTTP status (401 or 403).
        status: u16,
    },
    /// A read kept getting answers that did not move it forward (a cache
    /// replaying a stale answer, a proxy cutting every connection early) and
    /// gave up after the configured bound, backing off between tries.
    NoProgress {
        /// Answers in a row without progress.
        attempts: u32,
    },
    /// An idempotent producer's first attempt of a sequence number was
    /// answered as a duplicate: another producer instance, or an earlier run
    /// with the same id and epoch, already wrote that (id, epoch, seq). The
    /// data was not stored. Use a new epoch (the default epoch is derived
    /// from the clock), a unique producer id, or `auto_claim`.
    ProducerIdCollision {
        /// The epoch that collided.
        epoch: u64,
        /// The sequence number the server already held.
        seq: u64,
    },
    /// The server forgot this producer's state (it answered a sequence gap
    /// expecting seq 0 after higher seqs were acknowledged, as after a
    /// restart without durable producer state). Opt-in recovery claims a new
    /// epoch and re-sends every unacknowledged batch.
    ProducerStateLost {
        /// The epoch whose state was lost.
        epoch: u64,
    },
    /// A producer could not get a batch acknowledged within its delivery
    /// timeout (retries and outages included).
    DeliveryTimeout,
    /// A connection could not be made or broke.
    Network,
    /// A request or an idle live connection timed out.
    Timeout,
    /// The server sent something this client could not decode.
    Decode(DecodeKind),
    /// A producer's buffer (`max_buffered_bytes`) has no room for the message
    /// right now; nothing was queued. Retry later or use the waiting `send`.
    BufferFull,
    /// The producer was closed (or dropped) before this operation completed.
    ProducerClosed,
    /// An argument or a configuration value is invalid; no request was sent.
    InvalidArgument {
        /// The name of the offending option or argument.
        field: &'static str,
    },
    /// Application code returned an error or panicked: a
    /// [consumer](crate::consumer) handler, a [pipeline](crate::pipeline)
    /// processor or batch function, or a [supervised](crate::supervisor) child.
    Handler {
        /// The handler panicked (the panic was caught).
        panicked: bool,
    },
    /// A [checkpoint store](crate::consumer::CheckpointStore) failed to load
    /// or save an offset.
    Checkpoint,
    /// A [supervisor](crate::supervisor) restarted its children more often
    /// than its restart intensity allows and stopped.
    RestartIntensity,
    /// A bug or an unexpected state inside the library: a background task
    /// ended or failed unexpectedly; report it.
    Internal,
    /// A [subscription](crate::subscription) request was refused with one of
    /// the protocol's error codes (PROTOCOL.md sections 6 and 7).
    Subscription {
        /// The server's error code.
        code: SubscriptionErrorCode,
    },
    /// The server does not implement this part of the protocol (for example
    /// subscriptions: its `__ds` routes answer 404 without a protocol error
    /// code, or treat them as ordinary streams).
    Unsupported {
        /// What is missing, for example `"subscriptions"`.
        feature: &'static str,
    },
    /// A webhook delivery failed verification
    /// ([`WebhookVerifier`](crate::subscription::WebhookVerifier)): do no
    /// work for it, and answer it with an error status (401). Failures to
    /// fetch the server's keys are not rejections: they keep their own kind
    /// (network, server, ...), and the receiver should answer 503 so the
    /// server retries.
    WebhookRejected {
        /// Why.
        reason: WebhookRejection,
    },
    /// A message read from a stream breaks the rules of its format (for
    /// example a [State Protocol](crate::state) change without `key`); the
    /// message names the offset, the message and the field.
    InvalidMessage {
        /// The offending field, e.g. `"headers.operation"`.
        field: &'static str,
    },
    /// A [state store](crate::state::StateStore) failed to load or apply a batch.
    Store,
    /// A framed binary stream ([`codec`](crate::codec)) holds a frame larger
    /// than the reader's limit (stored or decompressed).
    FrameTooLarge {
        /// The limit in bytes ([`Framing::max_frame_bytes`](crate::codec::Framing::max_frame_bytes)).
        limit: usize,
        /// A resume position at or before the frame: the last exact offset
        /// at which no partial frame was carried (the message gives the
        /// frame's distance from it in bytes).
        offset: Offset,
    },
    /// A closed framed stream ends inside a frame.
    TruncatedFrame {
        /// A resume position at or before the frame (as in
        /// [`ErrorKind::FrameTooLarge`]).
        offset: Offset,
    },
    /// A frame compressed with a method whose cargo feature is off in this
    /// build (`frame-zstd`, `frame-gzip`).
    UnsupportedFrame {
        /// The frame's flags byte.
        flag: u8,
        /// A resume position at or before the frame (as in
        /// [`ErrorKind::FrameTooLarge`]).
        offset: Offset,
    },
}

/// Why a webhook delivery was rejected (PROTOCOL.md sections 7.1 and 12.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WebhookRejection {
    /// No `Webhook-Signature` header.
    MissingSignature,
    /// The header is not exactly `t=<unix seconds>,kid=<key id>,ed25519=<signature>`
    /// with an unpadded base64url signature of 64 bytes (or it was sent twice).
    MalformedSignature,
    /// No key with the header's `kid` in the server's key set, also after
    /// fetching it again (or a refetch was not allowed yet).
    UnknownKey,
    /// The signature does not match the timestamp and body under that key:
    /// forged, or the body was altered (verify the raw body bytes, before any
    /// parsing or re-encoding).
    BadSignature,
    /// The timestamp is older than the replay window, or further in the
    /// future than it.
    OutsideReplayWindow,
    /// Correctly signed, but for a subscription this receiver does not serve.
    UnexpectedSubscription,
    /// Correctly signed, but the body is not a wake notification.
    MalformedBody,
}

impl WebhookRejection {
    /// A short, stable name such as `"bad_signature"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::MalformedSignature => "malformed_signature",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::OutsideReplayWindow => "outside_replay_window",
            Self::UnexpectedSubscription => "unexpected_subscription",
            Self::MalformedBody => "malformed_body",
        }
    }
}

impl fmt::Display for WebhookRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MissingSignature => "no Webhook-Signature header",
            Self::MalformedSignature => "malformed Webhook-Signature header",
            Self::UnknownKey => "signed with an unknown key",
            Self::BadSignature => "the signature does not match the body",
            Self::OutsideReplayWindow => "the signature timestamp is outside the replay window",
            Self::UnexpectedSubscription => "a subscription this receiver does not serve",
            Self::MalformedBody => "the body is not a wake notification",
        })
    }
}

/// The error codes of the subscription APIs (PROTOCOL.md sections 6 and 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SubscriptionErrorCode {
    /// `INVALID_REQUEST` (400): a malformed body or configuration.
    InvalidRequest,
    /// `SUBSCRIPTION_NOT_FOUND` (404).
    NotFound,
    /// `SUBSCRIPTION_ALREADY_EXISTS` (409): the id exists with another
    /// configuration.
    AlreadyExists,
    /// `WEBHOOK_URL_REJECTED` (400): the webhook URL failed the server's
    /// SSRF checks.
    WebhookUrlRejected,
    /// `TOKEN_INVALID` (401): a claim or callback token the server does not accept.
    TokenInvalid,
    /// `TOKEN_EXPIRED` (401).
    TokenExpired,
    /// `FENCED` (409): the wake or generation is no longer current; nothing
    /// was committed.
    Fenced,
    /// `ALREADY_CLAIMED` (409): another worker holds the lease.
    AlreadyClaimed,
    /// `NO_PENDING_WORK` (409): nothing to claim.
    NoPendingWork,
    /// `INVALID_OFFSET` (409): an ack names an unknown stream, regresses the
    /// cursor or points past the tail.
    InvalidOffset,
    /// A code this client does not know (the message carries it).
    Other,
}

impl SubscriptionErrorCode {
    /// Parse a wire code such as `"FENCED"`; unknown codes give [`Other`](Self::Other).
    pub fn from_wire(code: &str) -> Self {
        match code {
            "INVALID_REQUEST" => Self::InvalidRequest,
            "SUBSCRIPTION_NOT_FOUND" => Self::NotFound,
            "SUBSCRIPTION_ALREADY_EXISTS" => Self::AlreadyExists,
            "WEBHOOK_URL_REJECTED" => Self::WebhookUrlRejected,
            "TOKEN_INVALID" => Self::TokenInvalid,
            "TOKEN_EXPIRED" => Self::TokenExpired,
            "FENCED" => Self::Fenced,
            "ALREADY_CLAIMED" => Self::AlreadyClaimed,
            "NO_PENDING_WORK" => Self::NoPendingWork,
            "INVALID_OFFSET" => Self::InvalidOffset,
            _ => Self::Other,
        }
    }

    /// The wire form (`"OTHER"` for [`Other`](Self::Other)).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InvalidRequest => "INVALID_REQUEST",
            Self::NotFound => "SUBSCRIPTION_NOT_FOUND",
            Self::AlreadyExists => "SUBSCRIPTION_ALREADY_EXISTS",
            Self::WebhookUrlRejected => "WEBHOOK_URL_REJECTED",
            Self::TokenInvalid => "TOKEN_INVALID",
            Self::TokenExpired => "TOKEN_EXPIRED",
            Self::Fenced => "FENCED",
            Self::AlreadyClaimed => "ALREADY_CLAIMED",
            Self::NoPendingWork => "NO_PENDING_WORK",
            Self::InvalidOffset => "INVALID_OFFSET",
            Self::Other => "OTHER",
        }
    }
}

impl fmt::Display for SubscriptionErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ErrorKind {
    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::NotFound => f.write_str("not found"),
            ErrorKind::Conflict(reason) => write!(f, "conflict: {reason}"),
            ErrorKind::StreamClosed {
                final_offset: Some(o),
            } => {
                write!(f, "stream is closed (final offset {o})")
            }
            ErrorKind::StreamClosed { final_offset: None } => f.write_str("stream is closed"),
            ErrorKind::StaleEpoch { current } => {
                write!(f, "stale producer epoch (server epoch is {current})")
            }
            ErrorKind::SequenceGap { expected, received } => {
                write!(
                    f,
                    "producer sequence gap (expected {expected}, sent {received})"
                )
            }
            ErrorKind::BadRequest => f.write_str("bad request"),
            ErrorKind::Gone => f.write_str("gone"),
            ErrorKind::PayloadTooLarge => f.write_str("payload too large"),
            ErrorKind::ResponseTooLarge { limit } => {
                write!(f, "response body exceeds the {limit}-byte limit")
            }
            ErrorKind::RateLimited {
                retry_after: Some(d),
            } => {
                write!(f, "rate limited (retry after {} ms)", d.as_millis())
            }
            ErrorKind::RateLimited { retry_after: None } => f.write_str("rate limited"),
            ErrorKind::Server { status } => write!(f, "server error {status}"),
            ErrorKind::UnexpectedStatus { status } => write!(f, "unexpected status {status}"),
            ErrorKind::Redirect {
                status,
                location: Some(l),
            } => write!(f, "redirect {status} to {l} not followed"),
            ErrorKind::Redirect {
                status,
                location: None,
            } => write!(f, "redirect {status} without a Location not followed"),
            ErrorKind::Unauthorized { status } => {
                write!(f, "unauthorized ({status}): credentials refused")
            }
            ErrorKind::NoProgress { attempts } => write!(
                f,
                "no progress after {attempts} answers in a row (a cache or proxy may be replaying stale answers)"
            ),
            ErrorKind::ProducerIdCollision { epoch, seq } => write!(
                f,
                "producer id collision: (epoch {epoch}, seq {seq}) was already written by another producer instance or an earlier run; nothing was stored (use a new epoch, a unique producer id, or auto_claim)"
            ),
            ErrorKind::ProducerStateLost { epoch } => write!(
                f,
                "the server lost this producer's state for epoch {epoch} (restarted without it?)"
            ),
            ErrorKind::DeliveryTimeout => f.write_str("producer delivery timeout expired"),
            ErrorKind::Network => f.write_str("network error"),
            ErrorKind::Timeout => f.write_str("timed out"),
            ErrorKind::Decode(what) => write!(f, "could not decode {what:?} from the server"),
            ErrorKind::BufferFull => f.write_str("producer buffer is full"),
            ErrorKind::ProducerClosed => f.write_str("producer is closed"),
            ErrorKind::InvalidArgument { field } => write!(f, "invalid argument `{field}`"),
            ErrorKind::Handler { panicked: false } => f.write_str("handler failed"),
            ErrorKind::Handler { panicked: true } => f.write_str("handler panicked"),
            ErrorKind::Checkpoint => f.write_str("checkpoint store failed"),
            ErrorKind::RestartIntensity => f.write_str("supervisor restart intensity exceeded"),
            ErrorKind::Internal => f.write_str("internal error"),
            ErrorKind::Subscription { code } => write!(f, "subscription request refused: {code}"),
            ErrorKind::Unsupported { feature } => {
                write!(f, "this server does not support {feature}")
            }
            ErrorKind::WebhookRejected { reason } => {
                write!(f, "webhook delivery rejected: {reason}")
            }
            ErrorKind::InvalidMessage { field } => write!(f, "invalid message (`{field}`)"),
            ErrorKind::Store => f.write_str("state store failed"),
            ErrorKind::FrameTooLarge { limit, offset } => {
                write!(
                    f,
                    "frame exceeds the {limit}-byte limit (at or after offset {offset})"
                )
            }
            ErrorKind::TruncatedFrame { offset } => {
                write!(
                    f,
                    "truncated frame at the end of the stream (after offset {offset})"
                )
            }
            ErrorKind::UnsupportedFrame { flag, offset } => write!(
                f,
                "frame with flags {flag} needs a feature this build lacks (after offset {offset})"
            ),
        }
    }
}

impl ErrorKind {
    /// A short, stable label for telemetry (`reason` in events and metrics).
    pub(crate) fn label(&self) -> &'static str {
        match self {
            ErrorKind::Network => "network",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Server { .. } => "server",
            ErrorKind::RateLimited { .. } => "rate_limited",
            ErrorKind::Handler { panicked: true } => "handler_panic",
            ErrorKind::Handler { panicked: false } => "handler",
            ErrorKind::Internal => "internal",
            ErrorKind::Checkpoint => "checkpoint",
            ErrorKind::Decode(_) => "decode",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Gone => "gone",
            ErrorKind::Subscription {
                code: SubscriptionErrorCode::Fenced,
            } => "fenced",
            ErrorKind::Subscription { .. } => "subscription",
            ErrorKind::Unsupported { .. } => "unsupported",
            ErrorKind::WebhookRejected { .. } => "webhook_rejected",
            ErrorKind::InvalidMessage { .. } => "invalid_message",
            ErrorKind::Store => "store",
            ErrorKind::FrameTooLarge { .. }
            | ErrorKind::TruncatedFrame { .. }
            | ErrorKind::UnsupportedFrame { .. } => "frame",
            _ => "other",
        }
    }
}

/// The error of every fallible operation in this crate.
///
/// Match on [`Error::kind`]; [`Error::status`] and [`Error::url`] say which
/// response and which stream it came from. The `Display` form names the stream
/// path, never a query string or header value (no secrets). Cloning is cheap
/// enough for fan-out: the source is shared.
#[derive(Clone)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    url: Option<String>,
    status: Option<u16>,
    message: Option<String>,
    outcome_unknown: bool,
    source: Option<SharedSource>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                url: None,
                status: None,
                message: None,
                outcome_unknown: false,
                source: None,
            }),
        }
    }

    pub(crate) fn invalid_argument(field: &'static str, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument { field }).with_message(message)
    }

    pub(crate) fn webhook_rejected(reason: WebhookRejection, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::WebhookRejected { reason }).with_message(message)
    }

    pub(crate) fn decode(what: DecodeKind, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Decode(what)).with_message(message)
    }

    /// An error for a [consumer](crate::consumer) handler (or a
    /// [pipeline](crate::pipeline) function) to return, wrapping
    /// the application's own error (kind [`ErrorKind::Handler`]).
    pub fn handler(source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        let source = source.into();
        Error::new(ErrorKind::Handler { panicked: false })
            .with_message(source.to_string())
            .with_source(source)
    }

    /// An error for a [checkpoint store](crate::consumer::CheckpointStore)
    /// to return, wrapping the underlying failure (kind [`ErrorKind::Checkpoint`]).
    pub fn checkpoint(
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        let source = source.into();
        Error::new(ErrorKind::Checkpoint)
            .with_message(source.to_string())
            .with_source(source)
    }

    /// Attach the stream URL; only scheme, host, port and path are kept so that
    /// query parameters (which may carry tokens) never reach a log.
    pub(crate) fn with_url(mut self, url: &url::Url) -> Self {
        self.inner.url = Some(redacted_url(url));
        self
    }

    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.inner.status = Some(status);
        self
    }

    pub(crate) fn with_message(mut self, message: impl Into<String>) -> Self {
        self.inner.message = Some(message.into());
        self
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(SharedSource::from(source.into()));
        self
    }

    pub(crate) fn with_outcome_unknown(mut self) -> Self {
        self.inner.outcome_unknown = true;
        self
    }

    /// What went wrong, for matching.
    pub fn kind(&self) -> &ErrorKind {
        &self.inner.kind
    }

    /// The HTTP status of the response that caused this error, if there was one.
    pub fn status(&self) -> Option<u16> {
        self.inner.status
    }

    /// The stream URL (scheme, host, port and path; no query string).
    pub fn url(&self) -> Option<&str> {
        self.inner.url.as_deref()
    }

    /// The server's or the client's explanation, when there is one.
    pub fn message(&self) -> Option<&str> {
        self.inner.message.as_deref()
    }

    /// True when a write's request body was sent but no answer came back, so
    /// the write may or may not have been applied. Such writes are not retried
    /// automatically; use the idempotent producer for safe retries.
    pub fn is_outcome_unknown(&self) -> bool {
        self.inner.outcome_unknown
    }

    /// True when repeating the same request later may succeed (network
    /// failures, timeouts, 5xx and 429).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::Network
                | ErrorKind::Timeout
                | ErrorKind::Server { .. }
                | ErrorKind::RateLimited { .. }
        )
    }

    /// The server's `Retry-After` of a final 429 ([`ErrorKind::RateLimited`])
    /// that carried one; `None` for every other error, including a 503
    /// ([`ErrorKind::Server`]). While retrying, the transport honours
    /// `Retry-After` on any retried status, 503 included.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.inner.kind {
            ErrorKind::RateLimited { retry_after } => retry_after,
            _ => None,
        }
    }
}

pub(crate) fn redacted_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// At most this many causes are shown by `Display`, each cut to
/// [`MAX_CAUSE_CHARS`] characters.
const MAX_CAUSES: usize = 6;
const MAX_CAUSE_CHARS: usize = 300;

impl fmt::Display for Error {
    /// `kind for stream /path on host:port (HTTP status): message: caused by
    /// source: caused by its source ...` — the host and port but never
    /// credentials or a query string; repeated causes are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = String::new();
        {
            use fmt::Write as _;
            write!(shown, "{}", Describe(&self.inner.kind))?;
            if let Some(url) = &self.inner.url {
                match url::Url::parse(url) {
                    Ok(u) => {
                        write!(shown, " for stream {}", u.path())?;
                        if let Some(host) = u.host_str() {
                            match u.port_or_known_default() {
                                Some(port) => write!(shown, " on {host}:{port}")?,
                                None => write!(shown, " on {host}")?,
                            }
                        }
                    }
                    Err(_) => write!(shown, " for stream {url}")?,
                }
            }
            if let Some(status) = self.inner.status {
                write!(shown, " (HTTP {status})")?;
            }
            if let Some(message) = &self.inner.message {
                write!(shown, ": {message}")?;
            }
            let mut source = std::error::Error::source(self);
            let mut causes = 0;
            while let Some(cause) = source {
                let text = cause.to_string();
                let text = text.trim();
                if !text.is_empty() && !shown.contains(text) {
                    if causes == MAX_CAUSES {
                        shown.push_str(": caused by ...");
                        break;
                    }
                    causes += 1;
                    shown.push_str(": caused by ");
                    match text.char_indices().nth(MAX_CAUSE_CHARS) {
                        Some((cut, _)) => {
                            shown.push_str(&text[..cut]);
                            shown.push_str("...");
                        }
                        None => shown.push_str(text),
                    }
                }
                source = cause.source();
            }
            if self.inner.outcome_unknown {
                shown.push_str(" [outcome unknown: the request was sent but no response arrived; it may have been applied]");
            }
        }
        f.write_str(&shown)
    }
}

struct Describe<'a>(&'a ErrorKind);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.describe(f)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if let Some(url) = &self.inner.url {
            d.field("url", url);
        }
        if let Some(status) = self.inner.status {
            d.field("status", &status);
        }
        if let Some(message) = &self.inner.message {
            d.field("message", message);
        }
        if self.inner.outcome_unknown {
            d.field("outcome_unknown", &true);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error::new(kind)
    }
}

/// An offset given as an argument becomes [`ErrorKind::InvalidArgument`]
/// (field `offset`); one sent by a server, a [`DecodeKind::Header`] decode
/// error. The message is the offset error's text.
impl From<InvalidOffset> for Error {
    fn from(e: InvalidOffset) -> Self {
        match e.origin() {
            Origin::Argument => Error::invalid_argument("offset", e.reason()),
            Origin::Server => Error::decode(DecodeKind::Header, e.reason()),
        }
    }
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
