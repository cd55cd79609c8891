//! The one place that builds, sends and retries requests, and turns responses
//! into protocol metadata or an [`Error`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use tracing::Instrument;

use crate::error::{ConflictReason, DecodeKind, Error, ErrorKind, Result};
use crate::offset::Offset;
use crate::retry::{Backoff, parse_retry_after};
use crate::stream::StreamInner;

/// Protocol header names.
pub(crate) mod names {
    pub(crate) const NEXT_OFFSET: &str = "stream-next-offset";
    pub(crate) const CURSOR: &str = "stream-cursor";
    pub(crate) const UP_TO_DATE: &str = "stream-up-to-date";
    pub(crate) const CLOSED: &str = "stream-closed";
    pub(crate) const TTL: &str = "stream-ttl";
    pub(crate) const EXPIRES_AT: &str = "stream-expires-at";
    pub(crate) const SEQ: &str = "stream-seq";
    pub(crate) const FORKED_FROM: &str = "stream-forked-from";
    pub(crate) const FORK_OFFSET: &str = "stream-fork-offset";
    pub(crate) const FORK_SUB_OFFSET: &str = "stream-fork-sub-offset";
    pub(crate) const SSE_DATA_ENCODING: &str = "stream-sse-data-encoding";
    pub(crate) const PRODUCER_ID: &str = "producer-id";
    pub(crate) const PRODUCER_EPOCH: &str = "producer-epoch";
    pub(crate) const PRODUCER_SEQ: &str = "producer-seq";
    pub(crate) const PRODUCER_EXPECTED_SEQ: &str = "producer-expected-seq";
    pub(crate) const PRODUCER_RECEIVED_SEQ: &str = "producer-received-seq";
}

/// A boxed future of a computed header or parameter value.
pub type ValueFuture = Pin<Box<dyn Future<Output = String> + Send + 'static>>;

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
    async fn resolve(&self) -> String {
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

/// One request, before dynamic values are resolved.
#[derive(Debug, Clone)]
pub(crate) struct RequestSpec {
    pub(crate) method: Method,
    pub(crate) operation: &'static str,
    pub(crate) query: Vec<(&'static str, String)>,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Option<Bytes>,
    pub(crate) idempotency: Idempotency,
    /// Live reads are bounded by the idle timeout only, not the request timeout.
    pub(crate) live: bool,
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
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl AsRef<str>) -> Result<Self> {
        let value = HeaderValue::from_str(value.as_ref())
            .map_err(|_| Error::invalid_argument("header", format!("invalid value for {name}")))?;
        self.headers.push((HeaderName::from_static(name), value));
        Ok(self)
    }

    pub(crate) fn query(mut self, key: &'static str, value: impl Into<String>) -> Self {
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

    fn sent_header(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n.as_str() == name)
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
    pub(crate) etag: Option<String>,
    pub(crate) content_type: Option<String>,
}

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

pub(crate) fn header_is_true(headers: &HeaderMap, name: &str) -> bool {
    header_str(headers, name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

pub(crate) fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>> {
    match header_str(headers, name) {
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
            etag: header_str(headers, "etag").map(str::to_owned),
            content_type: header_str(headers, "content-type").map(str::to_owned),
        })
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

/// Longest server error text kept in an error message.
const MAX_ERROR_TEXT: usize = 512;

/// Map a non-success response to an [`Error`] with the right kind.
pub(crate) fn error_from_response(
    spec: &RequestSpec,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Error {
    let code = status.as_u16();
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_TEXT)])
        .trim()
        .to_owned();
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
    let mut err = Error::new(kind).with_status(code);
    if !text.is_empty() {
        err = err.with_message(text);
    }
    err
}

fn conflict_reason(spec: &RequestSpec, text: &str) -> ConflictReason {
    let lower = text.to_ascii_lowercase();
    if lower.contains("content-type") || lower.contains("content type") {
        ConflictReason::ContentTypeMismatch
    } else if spec.method == Method::PUT {
        ConflictReason::ExistsWithDifferentConfig
    } else if spec.sent_header(names::SEQ) || lower.contains("seq") {
        ConflictReason::SequenceRegression
    } else {
        ConflictReason::Other
    }
}

fn retryable_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

fn transport_error(err: reqwest::Error, spec: &RequestSpec, body_sent: bool) -> Error {
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Network
    };
    let mut e = Error::new(kind).with_source(err);
    if body_sent && spec.idempotency == Idempotency::Unsafe {
        e = e.with_outcome_unknown();
    }
    e
}

impl StreamInner {
    /// Resolve static and dynamic headers and parameters into a request.
    async fn build(&self, spec: &RequestSpec) -> Result<reqwest::Request> {
        let http = self.client.http()?;
        let mut url = self.url.clone();
        let mut pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (key, source) in &self.params {
            let value = source.resolve().await;
            pairs.retain(|(k, _)| k != key);
            pairs.push((key.clone(), value));
        }
        for (key, value) in &spec.query {
            pairs.retain(|(k, _)| k != key);
            pairs.push(((*key).to_owned(), value.clone()));
        }
        // Lexicographic key order (PROTOCOL.md 10.1) keeps CDN cache keys stable.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        if pairs.is_empty() {
            url.set_query(None);
        } else {
            url.set_query(Some(&encode_query(&pairs)));
        }
        let mut builder = http.request(spec.method.clone(), url);
        let mut headers = self.client.inner.default_headers.clone();
        for (name, source) in &self.headers {
            let value = source.resolve().await;
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                Error::invalid_argument("header", format!("invalid header name {name:?}"))
            })?;
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                Error::invalid_argument("header", format!("invalid value for header {name}"))
            })?;
            if source.is_dynamic() || crate::client::is_secret_header(name.as_str()) {
                value.set_sensitive(true);
            }
            headers.insert(name, value);
        }
        for (name, value) in &spec.headers {
            headers.insert(name.clone(), value.clone());
        }
        builder = builder.headers(headers);
        if !spec.live
            && let Some(timeout) = self.client.inner.request_timeout
        {
            builder = builder.timeout(timeout);
        }
        if let Some(body) = &spec.body {
            builder = builder.body(body.clone());
        } else if spec.method == Method::POST || spec.method == Method::PUT {
            builder = builder.body(Bytes::new());
        }
        builder.build().map_err(|e| {
            Error::invalid_argument("url", "could not build the request").with_source(e)
        })
    }

    /// Send with retries until response headers arrive, with a fresh
    /// [`Backoff`] of the client's policy.
    pub(crate) async fn send(&self, spec: &RequestSpec) -> Result<reqwest::Response> {
        let mut backoff = Backoff::new(&self.client.inner.retry);
        self.send_retrying(spec, &mut backoff).await
    }

    /// Send and read the whole body (bounded by the client's limit), with a
    /// fresh [`Backoff`] of the client's policy.
    pub(crate) async fn send_buffered(&self, spec: &RequestSpec) -> Result<BufferedResponse> {
        let mut backoff = Backoff::new(&self.client.inner.retry);
        self.send_buffered_retrying(spec, &mut backoff).await
    }

    /// Send and read the whole body, retrying truncated bodies of
    /// idempotent requests. Retries of the request and of its body draw on
    /// the one `backoff`.
    pub(crate) async fn send_buffered_retrying(
        &self,
        spec: &RequestSpec,
        backoff: &mut Backoff,
    ) -> Result<BufferedResponse> {
        let limit = self.client.inner.max_response_bytes;
        loop {
            let resp = self.send_retrying(spec, backoff).await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            match read_body_limited(resp, limit).await {
                Ok(body) => {
                    return Ok(BufferedResponse {
                        status,
                        headers,
                        body,
                    });
                }
                Err(BodyError::TooLarge) => {
                    return Err(Error::new(ErrorKind::ResponseTooLarge { limit })
                        .with_status(status.as_u16())
                        .with_url(&self.url));
                }
                Err(BodyError::Transport(err)) => {
                    let e = transport_error(err, spec, true).with_url(&self.url);
                    if spec.idempotency == Idempotency::Unsafe {
                        return Err(e.with_status(status.as_u16()));
                    }
                    let Some(wait) = backoff.next_delay(None) else {
                        return Err(e.with_status(status.as_u16()));
                    };
                    tracing::debug!(operation = spec.operation, retry = backoff.retries(), wait_ms = wait.as_millis() as u64, error = %e, "retrying after a broken response body");
                    crate::telemetry::retry(spec.operation, "body");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The retry loop: send until response headers arrive. Retries connect
    /// failures always, 5xx/429 always (the server did not do it), and other
    /// transport failures only for idempotent requests; every wait comes
    /// from the caller's `backoff` (one budget per operation).
    pub(crate) async fn send_retrying(
        &self,
        spec: &RequestSpec,
        backoff: &mut Backoff,
    ) -> Result<reqwest::Response> {
        let path = self.url.path().to_owned();
        loop {
            let attempt = backoff.retries() + 1;
            let request = self.build(spec).await.map_err(|e| e.with_url(&self.url))?;
            let span = tracing::debug_span!(
                "durable_streams.request",
                method = %spec.method,
                operation = spec.operation,
                path = %path,
                attempt,
                status = tracing::field::Empty,
                duration_ms = tracing::field::Empty,
            );
            let started = Instant::now();
            let http = self.client.http().map_err(|e| e.with_url(&self.url))?;
            let outcome = http.execute(request).instrument(span.clone()).await;
            let elapsed = started.elapsed();
            span.record("duration_ms", elapsed.as_secs_f64() * 1000.0);
            let (error, wait) = match outcome {
                Ok(resp) => {
                    let status = resp.status();
                    span.record("status", status.as_u16());
                    crate::telemetry::request_done(spec.operation, status.as_u16(), elapsed);
                    if !retryable_status(status) {
                        return Ok(resp);
                    }
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    let Some(wait) = backoff.next_delay(retry_after) else {
                        let headers = resp.headers().clone();
                        let body = read_body_limited(resp, 4096).await.unwrap_or_default();
                        return Err(
                            error_from_response(spec, status, &headers, &body).with_url(&self.url)
                        );
                    };
                    (format!("HTTP {status}"), wait)
                }
                Err(err) => {
                    crate::telemetry::request_failed(spec.operation, elapsed);
                    let safe = err.is_connect() || spec.idempotency == Idempotency::Safe;
                    let e = transport_error(err, spec, true).with_url(&self.url);
                    if !safe {
                        return Err(e);
                    }
                    let Some(wait) = backoff.next_delay(None) else {
                        return Err(e);
                    };
                    (e.to_string(), wait)
                }
            };
            tracing::debug!(
                operation = spec.operation,
                path = %path,
                attempt,
                wait_ms = wait.as_millis() as u64,
                reason = %error,
                "retrying request"
            );
            crate::telemetry::retry(spec.operation, "response");
            tokio::time::sleep(wait).await;
        }
    }
}

#[derive(Debug)]
pub(crate) enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Read a body into memory, failing early when it exceeds `limit` bytes.
pub(crate) async fn read_body_limited(
    mut resp: reqwest::Response,
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

/// `k=v&...` with every reserved byte percent-encoded, space as `%20`
/// rather than form encoding's `+` (which a plain percent-decoding server
/// would keep as a literal `+`).
pub(crate) fn encode_query(pairs: &[(String, String)]) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    // A literal '+' was encoded as %2B, so every '+' left is a space.
    ser.finish().replace('+', "%20")
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
        assert!(e.message().unwrap().len() <= MAX_ERROR_TEXT);
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
        assert_eq!(m.next_offset.unwrap().as_str(), "0_5");
        assert_eq!(m.cursor.as_deref(), Some("42"));
        assert!(m.up_to_date);
        assert!(!m.closed, "only `true` means closed");
        assert_eq!(m.etag.as_deref(), Some("\"a:b:c\""));
        let bad = headers(&[("stream-next-offset", "a/b")]);
        let e = ResponseMeta::from_headers(&bad).unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Header));
    }
}
