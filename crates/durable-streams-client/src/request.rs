//! The protocol's request and response model: what one request is
//! ([`RequestSpec`]), the metadata its response carries ([`ResponseMeta`]),
//! and how a failed response becomes an [`Error`]. Sending lives in
//! [`crate::transport`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use reqwest::header::{AsHeaderName, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};

use crate::error::{ConflictReason, DecodeKind, Error, ErrorKind, Result};
use crate::offset::Offset;
use crate::retry::parse_retry_after;

/// Protocol header names, parsed once (a lookup by `&str` parses the
/// name on every call).
pub(crate) mod names {
    use reqwest::header::HeaderName;

    pub(crate) const NEXT_OFFSET: HeaderName = HeaderName::from_static("stream-next-offset");
    pub(crate) const CURSOR: HeaderName = HeaderName::from_static("stream-cursor");
    pub(crate) const UP_TO_DATE: HeaderName = HeaderName::from_static("stream-up-to-date");
    pub(crate) const CLOSED: HeaderName = HeaderName::from_static("stream-closed");
    pub(crate) const TTL: HeaderName = HeaderName::from_static("stream-ttl");
    pub(crate) const EXPIRES_AT: HeaderName = HeaderName::from_static("stream-expires-at");
    pub(crate) const SEQ: HeaderName = HeaderName::from_static("stream-seq");
    pub(crate) const FORKED_FROM: HeaderName = HeaderName::from_static("stream-forked-from");
    pub(crate) const FORK_OFFSET: HeaderName = HeaderName::from_static("stream-fork-offset");
    pub(crate) const FORK_SUB_OFFSET: HeaderName =
        HeaderName::from_static("stream-fork-sub-offset");
    pub(crate) const SSE_DATA_ENCODING: HeaderName =
        HeaderName::from_static("stream-sse-data-encoding");
    pub(crate) const PRODUCER_ID: HeaderName = HeaderName::from_static("producer-id");
    pub(crate) const PRODUCER_EPOCH: HeaderName = HeaderName::from_static("producer-epoch");
    pub(crate) const PRODUCER_SEQ: HeaderName = HeaderName::from_static("producer-seq");
    pub(crate) const PRODUCER_EXPECTED_SEQ: HeaderName =
        HeaderName::from_static("producer-expected-seq");
    pub(crate) const PRODUCER_RECEIVED_SEQ: HeaderName =
        HeaderName::from_static("producer-received-seq");
}

/// A boxed future of a computed header or parameter value.
pub(crate) type ValueFuture = Pin<Box<dyn Future<Output = String> + Send + 'static>>;

/// A header or query parameter value: fixed, or computed for every request
/// (for example a token that is refreshed). Computed values are never shown in
/// Debug output or logs.
#[derive(Clone)]
pub(crate) enum ValueSource {
    Static(String),
    Sync(Arc<dyn Fn() -> String + Send + Sync>),
    Async(Arc<dyn Fn() -> ValueFuture + Send + Sync>),
}

impl ValueSource {
    pub(crate) async fn resolve(&self) -> String {
        match self {
            ValueSource::Static(v) => v.clone(),
            ValueSource::Sync(f) => f(),
            ValueSource::Async(f) => f().await,
        }
    }

    pub(crate) fn is_dynamic(&self) -> bool {
        !matches!(self, ValueSource::Static(_))
    }
}

impl fmt::Debug for ValueSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueSource::Static(_) => f.write_str("<static>"),
            ValueSource::Sync(_) => f.write_str("<computed>"),
            ValueSource::Async(_) => f.write_str("<computed async>"),
        }
    }
}

/// Whether a request may be repeated after its body reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// Reads, HEAD, DELETE, PUT-create, close, producer appends: repeating is safe.
    Safe,
    /// Plain appends: a repeat could write twice.
    Unsafe,
}

/// A query value of a request: fixed text and offsets are kept as they are
/// (an offset's token is shared), so a read's query costs no copies until
/// it is encoded.
#[derive(Debug, Clone)]
pub(crate) enum QueryValue {
    Static(&'static str),
    Offset(crate::Offset),
    Owned(String),
}

impl QueryValue {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            QueryValue::Static(s) => s,
            QueryValue::Offset(o) => o.as_str(),
            QueryValue::Owned(s) => s,
        }
    }
}

impl From<&'static str> for QueryValue {
    fn from(s: &'static str) -> Self {
        QueryValue::Static(s)
    }
}

impl From<String> for QueryValue {
    fn from(s: String) -> Self {
        QueryValue::Owned(s)
    }
}

impl From<crate::Offset> for QueryValue {
    fn from(o: crate::Offset) -> Self {
        QueryValue::Offset(o)
    }
}

/// One request, before dynamic values are resolved.
#[derive(Debug, Clone)]
pub(crate) struct RequestSpec {
    pub(crate) method: Method,
    pub(crate) operation: &'static str,
    pub(crate) query: Vec<(&'static str, QueryValue)>,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Option<Bytes>,
    pub(crate) idempotency: Idempotency,
    /// Live reads are bounded by the idle timeout only, not the request timeout.
    pub(crate) live: bool,
    /// An SSE read (`live` too).
    pub(crate) event_stream: bool,
}

impl RequestSpec {
    pub(crate) fn new(method: Method, operation: &'static str) -> Self {
        let idempotency = if method == Method::POST {
            Idempotency::Unsafe
        } else {
            Idempotency::Safe
        };
        RequestSpec {
            method,
            operation,
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            idempotency,
            live: false,
            event_stream: false,
        }
    }

    pub(crate) fn header(self, name: HeaderName, value: impl AsRef<str>) -> Result<Self> {
        let value = header_value(&name, value.as_ref())?;
        Ok(self.header_value(name, value))
    }

    pub(crate) fn header_value(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub(crate) fn query(mut self, key: &'static str, value: impl Into<QueryValue>) -> Self {
        self.query.push((key, value.into()));
        self
    }

    pub(crate) fn body(mut self, body: Bytes) -> Self {
        self.body = Some(body);
        self
    }

    pub(crate) fn idempotency(mut self, idempotency: Idempotency) -> Self {
        self.idempotency = idempotency;
        self
    }

    pub(crate) fn live(mut self) -> Self {
        self.live = true;
        self
    }

    pub(crate) fn event_stream(mut self) -> Self {
        self.event_stream = true;
        self.live()
    }

    fn sent_header(&self, name: &HeaderName) -> bool {
        self.headers.iter().any(|(n, _)| n == name)
    }
}

/// A response whose body has been read in full (within the size limit).
#[derive(Debug)]
pub(crate) struct BufferedResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Protocol metadata carried by response headers.
#[derive(Debug, Clone, Default)]
pub(crate) struct ResponseMeta {
    pub(crate) next_offset: Option<Offset>,
    pub(crate) cursor: Option<String>,
    pub(crate) up_to_date: bool,
    pub(crate) closed: bool,
    /// Kept as received (no copy per response): read through [`Self::etag`].
    pub(crate) etag: Option<HeaderValue>,
    pub(crate) content_type: Option<HeaderValue>,
}

/// `value` as the value of header `name`, or an `InvalidArgument` error.
pub(crate) fn header_value(name: &HeaderName, value: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(value)
        .map_err(|_| Error::invalid_argument("header", format!("invalid value for {name}")))
}

/// A header's value as trimmed text. Name it with a [`names`] constant or
/// a `reqwest::header` one where there is one: found by hash alone.
pub(crate) fn header_str(headers: &HeaderMap, name: impl AsHeaderName) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

pub(crate) fn header_is_true(headers: &HeaderMap, name: impl AsHeaderName) -> bool {
    header_str(headers, name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

pub(crate) fn header_u64(headers: &HeaderMap, name: HeaderName) -> Result<Option<u64>> {
    match header_str(headers, &name) {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            Error::decode(
                DecodeKind::Header,
                format!("{name} is not an integer: {v:?}"),
            )
        }),
    }
}

impl ResponseMeta {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Self> {
        let next_offset = match header_str(headers, names::NEXT_OFFSET) {
            Some(v) => Some(Offset::from_server(v)?),
            None => None,
        };
        Ok(ResponseMeta {
            next_offset,
            cursor: header_str(headers, names::CURSOR)
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
            up_to_date: header_is_true(headers, names::UP_TO_DATE),
            closed: header_is_true(headers, names::CLOSED),
            etag: headers.get(reqwest::header::ETAG).cloned(),
            content_type: headers.get(reqwest::header::CONTENT_TYPE).cloned(),
        })
    }

    /// The `ETag`, as trimmed text.
    pub(crate) fn etag(&self) -> Option<&str> {
        self.etag
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    }

    /// The `Content-Type`, as trimmed text.
    pub(crate) fn content_type(&self) -> Option<&str> {
        self.content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    }

    /// The next offset, which every successful data response must carry.
    pub(crate) fn require_next_offset(&self) -> Result<Offset> {
        self.next_offset.clone().ok_or_else(|| {
            Error::decode(
                DecodeKind::Header,
                "response has no Stream-Next-Offset header",
            )
        })
    }
}

/// Longest server error text kept in an error message (characters).
const MAX_ERROR_TEXT: usize = 300;

/// A server body as quoted in an error: short, trimmed, with control
/// characters escaped so a hostile body cannot forge log lines or
/// terminal sequences.
fn quoted_server_text(body: &[u8]) -> String {
    let head = &body[..body.len().min(MAX_ERROR_TEXT * 4)];
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for (i, c) in text.trim().chars().enumerate() {
        if i == MAX_ERROR_TEXT {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Map a non-success response to an [`Error`] with the right kind.
pub(crate) fn error_from_response(
    spec: &RequestSpec,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Error {
    let code = status.as_u16();
    let text = quoted_server_text(body);
    let kind = match code {
        400 => ErrorKind::BadRequest,
        404 => ErrorKind::NotFound,
        410 => ErrorKind::Gone,
        413 => ErrorKind::PayloadTooLarge,
        429 => ErrorKind::RateLimited {
            retry_after: header_str(headers, "retry-after").and_then(parse_retry_after),
        },
        403 if headers.contains_key(names::PRODUCER_EPOCH) => {
            match header_u64(headers, names::PRODUCER_EPOCH) {
                Ok(Some(current)) => ErrorKind::StaleEpoch { current },
                _ => ErrorKind::UnexpectedStatus { status: code },
            }
        }
        401 => ErrorKind::Unauthorized { status: code },
        403 if !headers.contains_key(names::PRODUCER_EPOCH) => {
            ErrorKind::Unauthorized { status: code }
        }
        409 if header_is_true(headers, names::CLOSED) => ErrorKind::StreamClosed {
            final_offset: header_str(headers, names::NEXT_OFFSET)
                .and_then(|v| Offset::from_server(v).ok()),
        },
        409 if headers.contains_key(names::PRODUCER_EXPECTED_SEQ) => {
            let expected = header_u64(headers, names::PRODUCER_EXPECTED_SEQ)
                .ok()
                .flatten();
            let received = header_u64(headers, names::PRODUCER_RECEIVED_SEQ)
                .ok()
                .flatten();
            match (expected, received) {
                (Some(expected), Some(received)) => ErrorKind::SequenceGap { expected, received },
                _ => ErrorKind::Conflict(ConflictReason::Other),
            }
        }
        409 => ErrorKind::Conflict(conflict_reason(spec, &text)),
        500..=599 => ErrorKind::Server { status: code },
        _ => ErrorKind::UnexpectedStatus { status: code },
    };
    let mut message = text;
    if kind == ErrorKind::Conflict(ConflictReason::ContentTypeMismatch) {
        // Neither reference server names the stream's content type in a 409
        // (its Content-Type is the error text's), so name the one sent.
        let sent = spec
            .headers
            .iter()
            .find(|(n, _)| n.as_str() == "content-type")
            .and_then(|(_, v)| v.to_str().ok());
        let sent = match sent {
            Some(ct) => format!("this request's content type is {ct:?}"),
            None => "this request had no content type".to_owned(),
        };
        message = if message.is_empty() {
            sent
        } else {
            format!("{message} ({sent})")
        };
    }
    let mut err = Error::new(kind).with_status(code);
    if !message.is_empty() {
        err = err.with_message(message);
    }
    err
}

fn conflict_reason(spec: &RequestSpec, text: &str) -> ConflictReason {
    let lower = text.to_ascii_lowercase();
    if lower.contains("content-type") || lower.contains("content type") {
        ConflictReason::ContentTypeMismatch
    } else if spec.method == Method::PUT {
        ConflictReason::ExistsWithDifferentConfig
    } else if spec.sent_header(&names::SEQ) || lower.contains("seq") {
        ConflictReason::SequenceRegression
    } else {
        ConflictReason::Other
    }
}

#[derive(Debug)]
pub(crate) enum BodyError {
    TooLarge,
    Transport(crate::http::HttpError),
}

/// Read a body into memory, failing early when it exceeds `limit` bytes.
pub(crate) async fn read_body_limited(
    mut resp: crate::http::Response,
    limit: usize,
) -> std::result::Result<Bytes, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if buf.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        if buf.is_empty() && resp.content_length().is_none() {
            // Common case of a single chunk: no copy.
            buf.reserve(chunk.len());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Append `k=v&...` to `out` with every reserved byte percent-encoded,
/// space as `%20` rather than form encoding's `+` (which a plain
/// percent-decoding server would keep as a literal `+`).
pub(crate) fn encode_query<'a>(
    out: &mut String,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        push_encoded(out, k);
        out.push('=');
        push_encoded(out, v);
    }
}

/// Bytes a query value keeps as they are (form encoding's unreserved set).
const QUERY_PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] =
            (b as u8).is_ascii_alphanumeric() || matches!(b as u8, b'*' | b'-' | b'.' | b'_');
        b += 1;
    }
    table
};

fn push_encoded(out: &mut String, text: &str) {
    // Offsets, cursors and live modes need no escaping: copied as they are
    // (checked by table, a byte at a time).
    if text.bytes().all(|b| QUERY_PLAIN[usize::from(b)]) {
        out.push_str(text);
        return;
    }
    for piece in url::form_urlencoded::byte_serialize(text.as_bytes()) {
        // A literal '+' is encoded as %2B, so a '+' piece is a space.
        out.push_str(if piece == "+" { "%20" } else { piece });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(method: Method) -> RequestSpec {
        RequestSpec::new(method, "test")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn maps_statuses_to_kinds() {
        let s = spec(Method::POST);
        let e = error_from_response(&s, StatusCode::NOT_FOUND, &HeaderMap::new(), b"");
        assert_eq!(e.kind(), &ErrorKind::NotFound);
        assert_eq!(e.status(), Some(404));
        let e = error_from_response(
            &s,
            StatusCode::CONFLICT,
            &headers(&[("stream-closed", "true"), ("stream-next-offset", "abc")]),
            b"",
        );
        assert_eq!(
            e.kind(),
            &ErrorKind::StreamClosed {
                final_offset: Some(Offset::parse("abc").unwrap())
            }
        );
        let e = error_from_response(
            &s,
            StatusCode::CONFLICT,
            &headers(&[
                ("producer-expected-seq", "3"),
                ("producer-received-seq", "5"),
            ]),
            b"",
        );
        assert_eq!(
            e.kind(),
            &ErrorKind::SequenceGap {
                expected: 3,
                received: 5
            }
        );
        let e = error_from_response(
            &s,
            StatusCode::FORBIDDEN,
            &headers(&[("producer-epoch", "7")]),
            b"",
        );
        assert_eq!(e.kind(), &ErrorKind::StaleEpoch { current: 7 });
        let e = error_from_response(
            &s,
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "2")]),
            b"",
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        let e = error_from_response(
            &spec(Method::PUT),
            StatusCode::CONFLICT,
            &HeaderMap::new(),
            b"exists",
        );
        assert_eq!(
            e.kind(),
            &ErrorKind::Conflict(ConflictReason::ExistsWithDifferentConfig)
        );
        assert!(e.to_string().contains("closed state"), "{e}");
        let e = error_from_response(
            &s,
            StatusCode::CONFLICT,
            &HeaderMap::new(),
            b"Content-Type mismatch",
        );
        assert_eq!(
            e.kind(),
            &ErrorKind::Conflict(ConflictReason::ContentTypeMismatch)
        );
        let sent = spec(Method::POST)
            .header(reqwest::header::CONTENT_TYPE, "text/plain")
            .unwrap();
        let e = error_from_response(
            &sent,
            StatusCode::CONFLICT,
            &HeaderMap::new(),
            b"Content-type mismatch",
        );
        let shown = e.to_string();
        assert!(
            shown.contains("Content-type mismatch (this request's content type is \"text/plain\")")
                && shown.contains("CreateOptions::json()"),
            "{shown}"
        );
        let seq = spec(Method::POST).header(names::SEQ, "b").unwrap();
        let e = error_from_response(&seq, StatusCode::CONFLICT, &HeaderMap::new(), b"");
        assert_eq!(
            e.kind(),
            &ErrorKind::Conflict(ConflictReason::SequenceRegression)
        );
        let e = error_from_response(&s, StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b"");
        assert_eq!(e.kind(), &ErrorKind::Server { status: 503 });
        let e = error_from_response(&s, StatusCode::METHOD_NOT_ALLOWED, &HeaderMap::new(), b"");
        assert_eq!(e.kind(), &ErrorKind::UnexpectedStatus { status: 405 });
    }

    #[test]
    fn error_text_is_bounded() {
        let long = vec![b'x'; 10_000];
        let e = error_from_response(
            &spec(Method::GET),
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            &long,
        );
        assert!(e.message().unwrap().chars().count() <= MAX_ERROR_TEXT + 1);
        let e = error_from_response(
            &spec(Method::GET),
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            b"bad\r\n\x1b[31mforged log line",
        );
        let m = e.message().unwrap();
        assert!(!m.chars().any(char::is_control), "{m:?}");
        assert!(m.contains("\\r\\n"), "{m:?}");
        let e = error_from_response(
            &spec(Method::GET),
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            b"",
        );
        assert_eq!(e.kind(), &ErrorKind::Unauthorized { status: 401 });
        let e = error_from_response(
            &spec(Method::GET),
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            b"",
        );
        assert_eq!(e.kind(), &ErrorKind::Unauthorized { status: 403 });
    }

    #[test]
    fn meta_parses_protocol_headers() {
        let h = headers(&[
            ("stream-next-offset", "0_5"),
            ("stream-cursor", "42"),
            ("stream-up-to-date", "TRUE"),
            ("stream-closed", "yes"),
            ("etag", "\"a:b:c\""),
        ]);
        let m = ResponseMeta::from_headers(&h).unwrap();
        assert_eq!(m.next_offset.as_ref().unwrap().as_str(), "0_5");
        assert_eq!(m.cursor.as_deref(), Some("42"));
        assert!(m.up_to_date);
        assert!(!m.closed, "only `true` means closed");
        assert_eq!(m.etag(), Some("\"a:b:c\""));
        let bad = headers(&[("stream-next-offset", "a/b")]);
        let e = ResponseMeta::from_headers(&bad).unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Header));
    }

    /// Any valid offset token (sentinels included: only the encoding matters).
    fn token() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop::collection::vec(
            any::<char>().prop_filter("allowed", |&c| {
                !matches!(c, ',' | '&' | '=' | '?' | '/') && !c.is_control()
            }),
            1..40,
        )
        .prop_map(|cs| cs.into_iter().collect::<String>())
    }

    proptest::proptest! {
        #[test]
        fn query_encoding_round_trips(t in token()) {
            use proptest::prelude::*;
            // How request URLs carry offsets: percent-encoded, never `+`.
            let mut url = url::Url::parse("http://h/s").unwrap();
            let mut encoded = String::new();
            encode_query(&mut encoded, [("offset", t.as_str())]);
            url.set_query(Some(&encoded));
            let query = url.query().unwrap().to_owned();
            prop_assert!(!query.contains('+'));
            prop_assert!(!query.contains(' '));
            let decoded: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            prop_assert_eq!(decoded, vec![("offset".to_owned(), t.clone())]);
            let pct = percent_encoding::percent_decode_str(query.strip_prefix("offset=").unwrap())
                .decode_utf8()
                .unwrap();
            prop_assert_eq!(pct.as_ref(), t.as_str());
        }

        #[test]
        fn copied_text_is_what_encoding_would_give(t in "[A-Za-z0-9*._~+ %&=-]{0,24}|\\PC{0,12}") {
            let mut fast = String::new();
            push_encoded(&mut fast, &t);
            let slow: String = url::form_urlencoded::byte_serialize(t.as_bytes())
                .map(|piece| if piece == "+" { "%20" } else { piece })
                .collect();
            proptest::prop_assert_eq!(fast, slow);
        }
    }
}
