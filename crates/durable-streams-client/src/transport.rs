//! The transport: owned by the [`Client`](crate::Client), it builds, sends
//! and classifies every request, follows (or refuses) redirects, refreshes
//! credentials, and drives request retries through the one retry engine
//! ([`Backoff`]).
//!
//! What is retried (the table in the README says the same):
//!
//! | failure                                   | safe requests¹ | plain appends |
//! |-------------------------------------------|----------------|---------------|
//! | connect error (nothing was sent)          | retried        | retried       |
//! | 429, 500, 503                             | retried        | retried       |
//! | 502, 504 (a gateway: the origin may have applied it) | retried | outcome unknown |
//! | other 5xx                                 | retried (not 501) | error      |
//! | timeout, connection dropped after sending | retried        | outcome unknown |
//! | 401/403 with a refresh hook               | refreshed, retried (at most twice) | same |
//! | other 4xx                                 | error          | error         |
//!
//! ¹ reads, HEAD, DELETE, create, close, producer appends (which carry
//! `(id, epoch, seq)`), and appends with `retry_unknown_outcome`.
//!
//! One file on purpose (about 600 lines; the unit tests are in
//! `transport_tests.rs`): the retry table's decisions, the send loop,
//! redirects and credential refreshes are one piece of logic, read together.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode};
use tracing::Instrument;

use crate::error::{Error, ErrorKind, Result};
use crate::http::{HttpEngine, HttpError, OutgoingRequest, Response, SentUrl};
use crate::request::{
    BodyError, BufferedResponse, Idempotency, RequestSpec, ValueSource, encode_query,
    error_from_response, header_str, names, read_body_limited,
};
use crate::retry::{Backoff, RetryPolicy, parse_retry_after_at};

/// Redirects followed for one request before giving up.
const MAX_REDIRECTS: u32 = 5;

/// Credential refreshes (and retries) for one request after a 401/403.
const MAX_AUTH_REFRESHES: u32 = 2;

/// Header names whose values are never shown in Debug output or logs.
pub(crate) fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || name.contains("token")
        || name.contains("secret")
        || name.contains("api-key")
        || name.contains("apikey")
}

pub(crate) struct RedactedHeaders<'a>(pub(crate) &'a HeaderMap);

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.0 {
            if is_secret_header(name.as_str()) || value.is_sensitive() {
                map.entry(&name.as_str(), &"<redacted>");
            } else {
                map.entry(&name.as_str(), &value.to_str().unwrap_or("<binary>"));
            }
        }
        map.finish()
    }
}

/// Which redirects reads (GET, HEAD) follow. Writes (POST, PUT, DELETE)
/// follow only 307/308 to the same origin, with the full body re-sent,
/// whatever this says; nothing ever follows a redirect from https to http.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RedirectPolicy {
    /// Follow redirects within the same origin (scheme, host, port). The default.
    #[default]
    SameOrigin,
    /// Also follow redirects to other origins. Credentials (`Authorization`,
    /// cookies, secret-looking and computed headers) and computed query
    /// parameters are dropped when a request crosses origins.
    AnyOrigin,
    /// Follow no redirect: every 3xx is an [`ErrorKind::Redirect`] error.
    None,
}

/// A boxed future returned by a credential-refresh hook.
pub type RefreshFuture = Pin<Box<dyn Future<Output = Result<Option<String>>> + Send + 'static>>;

/// The hook called after a 401/403; see [`crate::Stream::with_auth_refresh`].
pub(crate) type AuthRefresh = Arc<dyn Fn() -> RefreshFuture + Send + Sync>;

/// Credentials state shared by every clone of a stream handle.
#[derive(Clone, Default)]
pub(crate) struct Auth {
    pub(crate) refresh: Option<AuthRefresh>,
    /// An `Authorization` value set by the refresh hook; overrides the
    /// handle's own header.
    pub(crate) authorization: Arc<RwLock<Option<HeaderValue>>>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("refresh", &self.refresh.as_ref().map(|_| "<hook>"))
            .finish_non_exhaustive()
    }
}

/// Where a request goes and what it carries: one stream's URL, headers,
/// parameters and credentials (borrowed from the stream handle).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub(crate) url: &'a url::Url,
    pub(crate) headers: &'a [(String, ValueSource)],
    pub(crate) params: &'a [(String, ValueSource)],
    pub(crate) auth: &'a Auth,
}

impl Target<'_> {
    /// Whether a header or parameter is computed by an async function.
    fn computes_async(&self) -> bool {
        self.headers
            .iter()
            .chain(self.params)
            .any(|(_, source)| matches!(source, ValueSource::Async(_)))
    }
}

/// The client's HTTP machinery and the settings every request obeys.
pub(crate) struct Transport {
    /// The pool, or why it could not be built (reported by every operation so
    /// that `Client::new()` itself never fails).
    pub(crate) http: std::result::Result<HttpEngine, String>,
    pub(crate) default_headers: HeaderMap,
    pub(crate) retry: RetryPolicy,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) live_idle_timeout: Duration,
    pub(crate) max_response_bytes: usize,
    pub(crate) redirects: RedirectPolicy,
}

/// What to do with a 3xx answer.
#[derive(Debug, PartialEq, Eq)]
enum Redirect {
    Follow(url::Url),
    Refuse,
}

/// Decide whether a redirect is followed. Pure, so it is unit-tested.
fn redirect_decision(
    policy: RedirectPolicy,
    method: &Method,
    status: StatusCode,
    from: &url::Url,
    location: Option<&str>,
) -> Redirect {
    let Some(to) = location.and_then(|l| from.join(l).ok()) else {
        return Redirect::Refuse;
    };
    if !matches!(to.scheme(), "http" | "https")
        || (from.scheme() == "https" && to.scheme() == "http")
    {
        return Redirect::Refuse;
    }
    let same_origin = same_origin(&to, from);
    let read = matches!(*method, Method::GET | Method::HEAD);
    let allowed = match policy {
        RedirectPolicy::None => false,
        // Writes: only the redirects that keep method and body, same origin.
        _ if !read => {
            same_origin
                && matches!(
                    status,
                    StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
                )
        }
        RedirectPolicy::SameOrigin => same_origin,
        RedirectPolicy::AnyOrigin => true,
    };
    if allowed {
        Redirect::Follow(to)
    } else {
        Redirect::Refuse
    }
}

/// Whether two URLs share an origin (scheme, host, port), without the
/// allocations of `Url::origin` (this runs on every request).
fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    // Without a redirect, both are the target's URL.
    std::ptr::eq(a, b)
        || a.scheme() == b.scheme()
            && a.host_str() == b.host_str()
            && a.port_or_known_default() == b.port_or_known_default()
}

/// Whether a response status is retried for a request of this idempotency.
fn retryable_status(status: StatusCode, idempotency: Idempotency) -> bool {
    match status.as_u16() {
        429 | 500 | 503 => true,
        // A gateway failed: the origin may have applied the request.
        502 | 504 => idempotency == Idempotency::Safe,
        501 | 505 => false,
        500..=599 => idempotency == Idempotency::Safe,
        _ => false,
    }
}

/// A 502/504 to a plain append: the origin may have applied it.
fn gateway_outcome_unknown(status: StatusCode, idempotency: Idempotency) -> bool {
    idempotency == Idempotency::Unsafe && matches!(status.as_u16(), 502 | 504)
}

/// 401, or 403 that is not a producer's stale epoch.
fn is_auth_failure(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::UNAUTHORIZED
        || (status == StatusCode::FORBIDDEN && !headers.contains_key(names::PRODUCER_EPOCH))
}

/// An HTTP failure as this crate's error.
pub(crate) fn transport_error(err: HttpError, spec: &RequestSpec) -> Error {
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Network
    };
    let body_sent = !err.nothing_sent();
    let mut e = Error::new(kind).with_source(err.into_source());
    if body_sent && spec.idempotency == Idempotency::Unsafe {
        e = e.with_outcome_unknown();
    }
    e
}

/// The `Location` of a redirect as shown in errors: no query, no credentials.
fn shown_location(from: &url::Url, location: Option<&str>) -> Option<String> {
    let location = location?;
    Some(match from.join(location) {
        Ok(url) => crate::error::redacted_url(&url),
        Err(_) => "<invalid location>".to_owned(),
    })
}

/// Redirects followed and credential refreshes made for one request.
#[derive(Debug, Default)]
struct Hops {
    redirects: u32,
    refreshes: u32,
}

/// What [`Transport::send`] does after one attempt.
enum Next {
    /// Hand this response to the caller.
    Done(Response),
    /// Send again at once (to a redirect's target, or with refreshed
    /// credentials).
    Resend,
    /// Send again after `wait`; `reason` is for the log.
    Retry { reason: String, wait: Duration },
}

/// One attempt got no answer: retry it while the backoff allows, unless the
/// request may have been applied (a plain append).
fn failed(
    target: &Target<'_>,
    spec: &RequestSpec,
    backoff: &mut Backoff,
    err: HttpError,
) -> Result<Next> {
    if err.is_invalid_request() {
        return Err(
            Error::invalid_argument("url", "not a valid HTTP request target")
                .with_source(err.into_source())
                .with_url(target.url),
        );
    }
    if !err.nothing_sent() {
        // The request may have reached the server.
        backoff.note_outcome_unknown();
    }
    let e = transport_error(err, spec).with_url(target.url);
    if e.is_outcome_unknown() {
        return Err(e);
    }
    let Some(wait) = backoff.next_delay(None) else {
        return Err(e);
    };
    Ok(Next::Retry {
        reason: e.to_string(),
        wait,
    })
}

impl Transport {
    pub(crate) fn http(&self) -> Result<&HttpEngine> {
        self.http.as_ref().map_err(|why| {
            Error::new(ErrorKind::Network).with_message(format!("HTTP client unavailable: {why}"))
        })
    }

    /// The URL sent, with its query resolved: the URL's own pairs, the
    /// handle's parameters (computed ones dropped when crossing origins) and
    /// the request's, a later pair replacing an earlier one of the same key,
    /// in lexicographic key order (PROTOCOL.md 10.1: it keeps CDN cache keys
    /// stable).
    async fn sent_url(
        &self,
        url: &url::Url,
        target: &Target<'_>,
        spec: &RequestSpec,
        cross_origin: bool,
    ) -> SentUrl {
        const INLINE_PAIRS: usize = 6;
        if url.query().is_none() && target.params.is_empty() && spec.query.len() <= INLINE_PAIRS {
            // Only the request's own few pairs (a read's offset, cursor, live
            // mode): ordered on the stack, encoded straight from where they are.
            let mut pairs = [("", ""); INLINE_PAIRS];
            let mut len = 0;
            for (key, value) in &spec.query {
                let pair = (*key, value.as_str());
                match pairs[..len].iter().position(|(k, _)| k == key) {
                    Some(i) => pairs[i] = pair,
                    None => {
                        pairs[len] = pair;
                        len += 1;
                    }
                }
            }
            let pairs = &mut pairs[..len];
            pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
            return SentUrl::new(url, |out| encode_query(out, pairs.iter().copied()));
        }
        let mut pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (key, source) in target.params {
            if cross_origin && source.is_dynamic() {
                continue;
            }
            let value = source.resolve().await;
            pairs.retain(|(k, _)| k != key);
            pairs.push((key.clone(), value));
        }
        for (key, value) in &spec.query {
            pairs.retain(|(k, _)| k != key);
            pairs.push(((*key).to_owned(), value.as_str().to_owned()));
        }
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        SentUrl::new(url, |out| {
            encode_query(out, pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        })
    }

    /// Resolve static and dynamic headers and parameters into a request to
    /// `url` (the target's URL, or where a redirect led). Crossing origins
    /// drops credentials and computed values.
    async fn build<'u>(
        &self,
        target: &Target<'_>,
        spec: &RequestSpec,
        url: &'u url::Url,
    ) -> Result<OutgoingRequest<'u>> {
        let cross_origin = !same_origin(url, target.url);
        let sent = self.sent_url(url, target, spec, cross_origin).await;
        // Room for every header up front, including the few the HTTP layer
        // adds (accept, content-length, host): no growth on the way out.
        let mut headers = HeaderMap::with_capacity(
            self.default_headers.len() + target.headers.len() + spec.headers.len() + 4,
        );
        headers.extend(
            self.default_headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        if cross_origin {
            headers.retain_secrets_dropped();
        }
        for (name, source) in target.headers {
            let secret = source.is_dynamic() || is_secret_header(name);
            if cross_origin && secret {
                continue;
            }
            let value = source.resolve().await;
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                Error::invalid_argument("header", format!("invalid header name {name:?}"))
            })?;
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                Error::invalid_argument("header", format!("invalid value for header {name}"))
            })?;
            value.set_sensitive(secret);
            headers.insert(name, value);
        }
        if !cross_origin {
            let refreshed = target
                .auth
                .authorization
                .read()
                .map(|v| v.clone())
                .unwrap_or(None);
            if let Some(value) = refreshed {
                headers.insert(reqwest::header::AUTHORIZATION, value);
            }
        }
        for (name, value) in &spec.headers {
            headers.insert(name.clone(), value.clone());
        }
        Ok(OutgoingRequest {
            method: spec.method.clone(),
            url,
            sent,
            headers,
            body: spec.body.clone().unwrap_or_default(),
            timeout: if spec.live {
                None
            } else {
                self.request_timeout
            },
            event_stream: spec.event_stream,
        })
    }

    /// `build` when no header or parameter is computed asynchronously:
    /// fixed and synchronously computed values never wait, so it finishes in
    /// its first poll, here on the stack instead of in a box.
    fn build_now<'u>(
        &self,
        target: &Target<'_>,
        spec: &RequestSpec,
        url: &'u url::Url,
    ) -> Result<OutgoingRequest<'u>> {
        self.build(target, spec, url)
            .now_or_never()
            .unwrap_or_else(|| {
                // Not reached: only `ValueSource::Async` awaits.
                Err(Error::invalid_argument(
                    "header",
                    "a header or parameter value waited without being async",
                ))
            })
    }

    /// Send until response headers arrive, following the retry table above;
    /// every wait comes from the caller's `backoff` (one budget per
    /// operation). Redirects are followed or refused here, and 401/403 call
    /// the target's refresh hook. The response returned is never a retryable
    /// status that had retries left, nor a redirect.
    pub(crate) async fn send(
        &self,
        target: &Target<'_>,
        spec: &RequestSpec,
        backoff: &mut Backoff,
    ) -> Result<Response> {
        let path = target.url.path();
        // Where a redirect led; the target's own URL until then.
        let mut redirected: Option<url::Url> = None;
        let mut hops = Hops::default();
        loop {
            let attempt = backoff.retries() + 1;
            let url = redirected.as_ref().unwrap_or(target.url);
            // `build` and `answered` are boxed when they wait: each is
            // short-lived, and inline they would enlarge this future for the
            // whole time the request waits for its answer (one per live
            // subscriber).
            let request = if target.computes_async() {
                Box::pin(self.build(target, spec, url)).await
            } else {
                self.build_now(target, spec, url)
            }
            .map_err(|e| e.with_url(target.url))?;
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
            let http = self.http().map_err(|e| e.with_url(target.url))?;
            // Without a subscriber the span is disabled: no instrumenting,
            // no recording (less code run on every request).
            let traced = !span.is_disabled();
            let outcome = if traced {
                http.send(request).instrument(span.clone()).await
            } else {
                http.send(request).await
            };
            let elapsed = started.elapsed();
            if traced {
                span.record("duration_ms", elapsed.as_secs_f64() * 1000.0);
            }
            let next = match outcome {
                Ok(resp) => {
                    let status = resp.status();
                    if traced {
                        span.record("status", status.as_u16());
                    }
                    crate::telemetry::request_done(spec.operation, status.as_u16(), elapsed);
                    if let Some(followed) = resp.redirected_to() {
                        // A preconfigured HTTP client followed a redirect on
                        // its own: a write may have been turned into a GET.
                        return Err(Error::new(ErrorKind::Redirect {
                            status: status.as_u16(),
                            location: Some(crate::error::redacted_url(followed)),
                        })
                        .with_message("the HTTP client followed a redirect by itself; build it with redirect::Policy::none()")
                        .with_url(target.url));
                    }
                    if status.is_success() {
                        // Nothing to follow, refresh or retry.
                        return Ok(resp);
                    }
                    Box::pin(self.answered(target, spec, backoff, resp, &mut redirected, &mut hops))
                        .await?
                }
                Err(err) => {
                    crate::telemetry::request_failed(spec.operation, elapsed);
                    failed(target, spec, backoff, err)?
                }
            };
            let (reason, wait) = match next {
                Next::Done(resp) => return Ok(resp),
                Next::Resend => continue,
                Next::Retry { reason, wait } => (reason, wait),
            };
            tracing::debug!(
                operation = spec.operation,
                path = %path,
                attempt,
                wait_ms = wait.as_millis() as u64,
                reason = %reason,
                "retrying request"
            );
            crate::telemetry::retry(spec.operation, "response");
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt was answered (sent to `url`): follow or refuse a redirect
    /// (`url` becomes its target), refresh credentials after a 401/403,
    /// return the response, or retry a retryable status while the backoff
    /// allows.
    async fn answered(
        &self,
        target: &Target<'_>,
        spec: &RequestSpec,
        backoff: &mut Backoff,
        resp: Response,
        redirected: &mut Option<url::Url>,
        hops: &mut Hops,
    ) -> Result<Next> {
        let status = resp.status();
        if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
            let url = redirected.as_ref().unwrap_or(target.url);
            let location = header_str(resp.headers(), LOCATION.as_str());
            return match redirect_decision(self.redirects, &spec.method, status, url, location) {
                Redirect::Follow(to) if hops.redirects < MAX_REDIRECTS => {
                    hops.redirects += 1;
                    tracing::debug!(operation = spec.operation, path = %target.url.path(), status = status.as_u16(), cross_origin = !same_origin(&to, target.url), "following a redirect");
                    *redirected = Some(to);
                    Ok(Next::Resend)
                }
                _ => Err(Error::new(ErrorKind::Redirect {
                    status: status.as_u16(),
                    location: shown_location(url, location),
                })
                .with_status(status.as_u16())
                .with_url(target.url)),
            };
        }
        if is_auth_failure(status, resp.headers()) {
            if let Some(refresh) = &target.auth.refresh
                && hops.refreshes < MAX_AUTH_REFRESHES
            {
                hops.refreshes += 1;
                self.refresh_credentials(target, refresh, status).await?;
                return Ok(Next::Resend);
            }
            return Ok(Next::Done(resp));
        }
        if gateway_outcome_unknown(status, spec.idempotency) {
            let headers = resp.headers().clone();
            let body = read_body_limited(resp, 4096).await.unwrap_or_default();
            return Err(error_from_response(spec, status, &headers, &body)
                .with_outcome_unknown()
                .with_url(target.url));
        }
        if !retryable_status(status, spec.idempotency) {
            return Ok(Next::Done(resp));
        }
        if status != StatusCode::SERVICE_UNAVAILABLE && status != StatusCode::TOO_MANY_REQUESTS {
            // A 500, 502 or 504 may come after the write was applied.
            backoff.note_outcome_unknown();
        }
        let retry_after = header_str(resp.headers(), "retry-after")
            .and_then(|v| parse_retry_after_at(v, header_str(resp.headers(), "date")));
        let Some(wait) = backoff.next_delay(retry_after) else {
            let headers = resp.headers().clone();
            let body = read_body_limited(resp, 4096).await.unwrap_or_default();
            return Err(error_from_response(spec, status, &headers, &body).with_url(target.url));
        };
        Ok(Next::Retry {
            reason: format!("HTTP {status}"),
            wait,
        })
    }

    /// Call the refresh hook; a new `Authorization` value it returns is kept
    /// for every clone of the handle.
    async fn refresh_credentials(
        &self,
        target: &Target<'_>,
        refresh: &AuthRefresh,
        status: StatusCode,
    ) -> Result<()> {
        tracing::debug!(path = %target.url.path(), status = status.as_u16(), "credentials refused; calling the refresh hook");
        crate::telemetry::retry("auth", "refresh");
        let refreshed = refresh().await.map_err(|e| {
            Error::new(ErrorKind::Unauthorized {
                status: status.as_u16(),
            })
            .with_status(status.as_u16())
            .with_message("the credential refresh hook failed")
            .with_source(e)
            .with_url(target.url)
        })?;
        if let Some(value) = refreshed {
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                Error::invalid_argument(
                    "authorization",
                    "the refresh hook returned a value that is not a header value",
                )
                .with_url(target.url)
            })?;
            value.set_sensitive(true);
            if let Ok(mut slot) = target.auth.authorization.write() {
                *slot = Some(value);
            }
        }
        Ok(())
    }

    /// Send and read the whole body (bounded by the client's limit),
    /// retrying truncated bodies of idempotent requests. Retries of the
    /// request and of its body draw on the one `backoff`.
    pub(crate) async fn send_buffered(
        &self,
        target: &Target<'_>,
        spec: &RequestSpec,
        backoff: &mut Backoff,
    ) -> Result<BufferedResponse> {
        let limit = self.max_response_bytes;
        loop {
            let mut resp = self.send(target, spec, backoff).await?;
            let status = resp.status();
            let headers = resp.take_headers();
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
                        .with_url(target.url));
                }
                Err(BodyError::Transport(err)) => {
                    backoff.note_outcome_unknown();
                    let e = transport_error(err, spec)
                        .with_url(target.url)
                        .with_status(status.as_u16());
                    if spec.idempotency == Idempotency::Unsafe {
                        return Err(e.with_outcome_unknown());
                    }
                    let Some(wait) = backoff.next_delay(None) else {
                        return Err(e);
                    };
                    tracing::debug!(operation = spec.operation, retry = backoff.retries(), wait_ms = wait.as_millis() as u64, error = %e, "retrying after a broken response body");
                    crate::telemetry::retry(spec.operation, "body");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Dropping secret headers from a header map.
trait DropSecrets {
    fn retain_secrets_dropped(&mut self);
}

impl DropSecrets for HeaderMap {
    fn retain_secrets_dropped(&mut self) {
        let secret: Vec<HeaderName> = self
            .iter()
            .filter(|(name, value)| value.is_sensitive() || is_secret_header(name.as_str()))
            .map(|(name, _)| name.clone())
            .collect();
        for name in secret {
            self.remove(name);
        }
    }
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
