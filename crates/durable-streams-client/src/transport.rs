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

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode};
use tracing::Instrument;

use crate::error::{Error, ErrorKind, Result};
use crate::request::{
    BodyError, BufferedResponse, Idempotency, RequestSpec, ValueSource, error_from_response,
    header_str, names, read_body_limited,
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

/// The client's HTTP machinery and the settings every request obeys.
pub(crate) struct Transport {
    /// The pool, or why it could not be built (reported by every operation so
    /// that `Client::new()` itself never fails).
    pub(crate) http: std::result::Result<reqwest::Client, String>,
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
    let same_origin = to.origin() == from.origin();
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

/// A reqwest error as this crate's error. The error's URL (which may carry
/// credentials or tokens in the query) is removed before it is kept.
pub(crate) fn transport_error(err: reqwest::Error, spec: &RequestSpec) -> Error {
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Network
    };
    // Nothing was sent when the connection could not be made.
    let body_sent = !err.is_connect();
    let mut e = Error::new(kind).with_source(err.without_url());
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

impl Transport {
    pub(crate) fn http(&self) -> Result<&reqwest::Client> {
        self.http.as_ref().map_err(|why| {
            Error::new(ErrorKind::Network).with_message(format!("HTTP client unavailable: {why}"))
        })
    }

    /// Resolve static and dynamic headers and parameters into a request to
    /// `url` (the target's URL, or where a redirect led). Crossing origins
    /// drops credentials and computed values.
    async fn build(
        &self,
        target: &Target<'_>,
        spec: &RequestSpec,
        url: &url::Url,
    ) -> Result<reqwest::Request> {
        let http = self.http()?;
        let cross_origin = url.origin() != target.url.origin();
        let mut url = url.clone();
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
            pairs.push(((*key).to_owned(), value.clone()));
        }
        // Lexicographic key order (PROTOCOL.md 10.1) keeps CDN cache keys stable.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        if pairs.is_empty() {
            url.set_query(None);
        } else {
            url.set_query(Some(&crate::request::encode_query(&pairs)));
        }
        let mut headers = self.default_headers.clone();
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
        let mut builder = http.request(spec.method.clone(), url).headers(headers);
        if !spec.live
            && let Some(timeout) = self.request_timeout
        {
            builder = builder.timeout(timeout);
        }
        if let Some(body) = &spec.body {
            builder = builder.body(body.clone());
        } else if spec.method == Method::POST || spec.method == Method::PUT {
            builder = builder.body(Bytes::new());
        }
        builder.build().map_err(|e| {
            Error::invalid_argument("url", "could not build the request")
                .with_source(e.without_url())
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
    ) -> Result<reqwest::Response> {
        let path = target.url.path();
        let mut url = target.url.clone();
        let mut redirects = 0;
        let mut refreshes = 0;
        loop {
            let attempt = backoff.retries() + 1;
            let request = self
                .build(target, spec, &url)
                .await
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
            let sent_url = request.url().clone();
            let started = Instant::now();
            let http = self.http().map_err(|e| e.with_url(target.url))?;
            let outcome = http.execute(request).instrument(span.clone()).await;
            let elapsed = started.elapsed();
            span.record("duration_ms", elapsed.as_secs_f64() * 1000.0);
            let (reason, wait) = match outcome {
                Ok(resp) => {
                    let status = resp.status();
                    span.record("status", status.as_u16());
                    crate::telemetry::request_done(spec.operation, status.as_u16(), elapsed);
                    if resp.url() != &sent_url {
                        // A preconfigured HTTP client followed a redirect on
                        // its own: a write may have been turned into a GET.
                        return Err(Error::new(ErrorKind::Redirect {
                            status: status.as_u16(),
                            location: Some(crate::error::redacted_url(resp.url())),
                        })
                        .with_message("the HTTP client followed a redirect by itself; build it with redirect::Policy::none()")
                        .with_url(target.url));
                    }
                    if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                        let location = header_str(resp.headers(), LOCATION.as_str());
                        match redirect_decision(
                            self.redirects,
                            &spec.method,
                            status,
                            &url,
                            location,
                        ) {
                            Redirect::Follow(to) if redirects < MAX_REDIRECTS => {
                                redirects += 1;
                                tracing::debug!(operation = spec.operation, path = %path, status = status.as_u16(), cross_origin = to.origin() != target.url.origin(), "following a redirect");
                                url = to;
                                continue;
                            }
                            _ => {
                                return Err(Error::new(ErrorKind::Redirect {
                                    status: status.as_u16(),
                                    location: shown_location(&url, location),
                                })
                                .with_status(status.as_u16())
                                .with_url(target.url));
                            }
                        }
                    }
                    if is_auth_failure(status, resp.headers()) {
                        if let Some(refresh) = &target.auth.refresh
                            && refreshes < MAX_AUTH_REFRESHES
                        {
                            refreshes += 1;
                            self.refresh_credentials(target, refresh, status).await?;
                            continue;
                        }
                        return Ok(resp);
                    }
                    if gateway_outcome_unknown(status, spec.idempotency) {
                        let headers = resp.headers().clone();
                        let body = read_body_limited(resp, 4096).await.unwrap_or_default();
                        return Err(error_from_response(spec, status, &headers, &body)
                            .with_outcome_unknown()
                            .with_url(target.url));
                    }
                    if !retryable_status(status, spec.idempotency) {
                        return Ok(resp);
                    }
                    if status != StatusCode::SERVICE_UNAVAILABLE
                        && status != StatusCode::TOO_MANY_REQUESTS
                    {
                        // A 500, 502 or 504 may come after the write was applied.
                        backoff.note_outcome_unknown();
                    }
                    let retry_after = header_str(resp.headers(), "retry-after")
                        .and_then(|v| parse_retry_after_at(v, header_str(resp.headers(), "date")));
                    let Some(wait) = backoff.next_delay(retry_after) else {
                        let headers = resp.headers().clone();
                        let body = read_body_limited(resp, 4096).await.unwrap_or_default();
                        return Err(
                            error_from_response(spec, status, &headers, &body).with_url(target.url)
                        );
                    };
                    (format!("HTTP {status}"), wait)
                }
                Err(err) => {
                    crate::telemetry::request_failed(spec.operation, elapsed);
                    if !err.is_connect() {
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
                    (e.to_string(), wait)
                }
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
            let resp = self.send(target, spec, backoff).await?;
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
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn writes_follow_only_same_origin_307_308() {
        let from = url("http://h:1/v1/stream/a");
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            for status in [301u16, 302, 303] {
                assert_eq!(
                    redirect_decision(
                        RedirectPolicy::AnyOrigin,
                        &method,
                        StatusCode::from_u16(status).unwrap(),
                        &from,
                        Some("/v1/stream/b")
                    ),
                    Redirect::Refuse,
                    "{method} {status}"
                );
            }
            for status in [
                StatusCode::TEMPORARY_REDIRECT,
                StatusCode::PERMANENT_REDIRECT,
            ] {
                assert_eq!(
                    redirect_decision(
                        RedirectPolicy::SameOrigin,
                        &method,
                        status,
                        &from,
                        Some("/v1/stream/b")
                    ),
                    Redirect::Follow(url("http://h:1/v1/stream/b"))
                );
                assert_eq!(
                    redirect_decision(
                        RedirectPolicy::AnyOrigin,
                        &method,
                        status,
                        &from,
                        Some("http://other:1/v1/stream/b")
                    ),
                    Redirect::Refuse,
                    "a write never crosses origins"
                );
            }
        }
    }

    #[test]
    fn reads_follow_by_policy_and_never_downgrade() {
        let from = url("https://h/v1/stream/a");
        let get = Method::GET;
        let found = StatusCode::FOUND;
        assert!(matches!(
            redirect_decision(RedirectPolicy::SameOrigin, &get, found, &from, Some("/x")),
            Redirect::Follow(_)
        ));
        assert_eq!(
            redirect_decision(
                RedirectPolicy::SameOrigin,
                &get,
                found,
                &from,
                Some("https://other/x")
            ),
            Redirect::Refuse
        );
        assert!(matches!(
            redirect_decision(
                RedirectPolicy::AnyOrigin,
                &get,
                found,
                &from,
                Some("https://other/x")
            ),
            Redirect::Follow(_)
        ));
        assert_eq!(
            redirect_decision(
                RedirectPolicy::AnyOrigin,
                &get,
                found,
                &from,
                Some("http://h/v1/stream/a")
            ),
            Redirect::Refuse,
            "https to http"
        );
        assert_eq!(
            redirect_decision(RedirectPolicy::None, &get, found, &from, Some("/x")),
            Redirect::Refuse
        );
        assert_eq!(
            redirect_decision(RedirectPolicy::SameOrigin, &get, found, &from, None),
            Redirect::Refuse
        );
        assert_eq!(
            redirect_decision(
                RedirectPolicy::AnyOrigin,
                &get,
                found,
                &from,
                Some("ftp://h/x")
            ),
            Redirect::Refuse
        );
    }

    #[test]
    fn retry_table() {
        use Idempotency::{Safe, Unsafe};
        let s = |c| StatusCode::from_u16(c).unwrap();
        for code in [429, 500, 503] {
            assert!(retryable_status(s(code), Safe) && retryable_status(s(code), Unsafe));
        }
        for code in [502, 504] {
            assert!(retryable_status(s(code), Safe));
            assert!(!retryable_status(s(code), Unsafe));
            assert!(gateway_outcome_unknown(s(code), Unsafe));
            assert!(!gateway_outcome_unknown(s(code), Safe));
        }
        for code in [400, 401, 403, 404, 409, 410, 413, 501, 505] {
            assert!(!retryable_status(s(code), Safe), "{code}");
            assert!(!retryable_status(s(code), Unsafe), "{code}");
        }
        assert!(retryable_status(s(507), Safe) && !retryable_status(s(507), Unsafe));
    }

    #[test]
    fn auth_failures_exclude_stale_epochs() {
        let mut h = HeaderMap::new();
        assert!(is_auth_failure(StatusCode::UNAUTHORIZED, &h));
        assert!(is_auth_failure(StatusCode::FORBIDDEN, &h));
        h.insert(names::PRODUCER_EPOCH, HeaderValue::from_static("3"));
        assert!(!is_auth_failure(StatusCode::FORBIDDEN, &h));
    }

    #[test]
    fn cross_origin_drops_secret_headers() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer x"));
        h.insert("cookie", HeaderValue::from_static("a=b"));
        let mut sensitive = HeaderValue::from_static("v");
        sensitive.set_sensitive(true);
        h.insert("x-custom", sensitive);
        h.insert("x-tenant", HeaderValue::from_static("acme"));
        h.retain_secrets_dropped();
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-tenant"));
    }

    #[test]
    fn shown_locations_have_no_secrets() {
        let from = url("http://h:1/v1/stream/a");
        let shown = shown_location(&from, Some("http://u:pw@o:2/p?token=abc")).unwrap();
        assert!(!shown.contains("pw") && !shown.contains("abc"), "{shown}");
        assert_eq!(
            shown_location(&from, Some("/b?x=1")).as_deref(),
            Some("http://h:1/b")
        );
    }

    mod scripted {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::Duration;

        use crate::testing::{Reply, ScriptedServer};
        use crate::{Client, ErrorKind, RedirectPolicy, RetryPolicy, Stream};

        fn client(redirects: RedirectPolicy) -> Client {
            Client::builder()
                .retry_policy(
                    RetryPolicy::default()
                        .max_retries(3)
                        .initial_delay(Duration::from_millis(1))
                        .max_delay(Duration::from_millis(5)),
                )
                .redirects(redirects)
                .build()
                .unwrap()
        }

        fn stream(server: &ScriptedServer) -> Stream {
            client(RedirectPolicy::default())
                .stream(server.url("/v1/stream/s"))
                .unwrap()
                .with_content_type("application/octet-stream")
        }

        fn appended() -> Reply {
            Reply::status(204).with_header("stream-next-offset", "0_5")
        }

        #[tokio::test]
        async fn gateway_errors_on_plain_appends_are_outcome_unknown() {
            for status in [502, 504] {
                let server = ScriptedServer::start(move |_, _| Reply::status(status)).await;
                let err = stream(&server).append("x").await.unwrap_err();
                assert!(err.is_outcome_unknown(), "{status}: {err}");
                assert_eq!(err.kind(), &ErrorKind::Server { status });
                assert_eq!(
                    server.count(),
                    1,
                    "{status} is not retried for a plain append"
                );
            }
        }

        #[tokio::test]
        async fn plain_appends_retry_what_the_server_did_not_do() {
            let server = ScriptedServer::start(|_, i| match i {
                0 => Reply::status(503),
                1 => Reply::status(429),
                2 => Reply::status(500),
                _ => appended(),
            })
            .await;
            let r = stream(&server).append("x").await.unwrap();
            assert_eq!(r.next_offset.unwrap().as_str(), "0_5");
            assert_eq!(server.count(), 4);
            assert!(server.requests().iter().all(|r| r.body == b"x"));
        }

        #[tokio::test]
        async fn safe_requests_retry_gateway_errors_within_one_budget() {
            let server = ScriptedServer::start(|_, i| match i {
                0 => Reply::status(502),
                _ => Reply::status(200).with_header("stream-next-offset", "0_1"),
            })
            .await;
            stream(&server).head().await.unwrap();
            assert_eq!(server.count(), 2);

            let always = ScriptedServer::start(|_, _| Reply::status(503)).await;
            let err = stream(&always).head().await.unwrap_err();
            assert_eq!(err.kind(), &ErrorKind::Server { status: 503 });
            assert_eq!(always.count(), 4, "one try plus max_retries, no nesting");
        }

        #[tokio::test]
        async fn retry_after_is_a_minimum() {
            let server = ScriptedServer::start(|_, i| match i {
                0 => Reply::status(429).with_header("retry-after", "1"),
                _ => Reply::status(200).with_header("stream-next-offset", "0_1"),
            })
            .await;
            let started = std::time::Instant::now();
            stream(&server).head().await.unwrap();
            assert!(started.elapsed() >= Duration::from_millis(950));
            assert_eq!(server.count(), 2);
        }

        #[tokio::test]
        async fn dropped_connections_after_sending_an_append_are_outcome_unknown() {
            let server = ScriptedServer::start(|req, _| {
                if req.method == "POST" {
                    Reply::Close
                } else {
                    Reply::status(200).with_header("stream-next-offset", "0_1")
                }
            })
            .await;
            let s = stream(&server);
            let err = s.append("x").await.unwrap_err();
            assert!(err.is_outcome_unknown(), "{err}");
            assert_eq!(server.count(), 1);

            let flaky = ScriptedServer::start(|_, i| {
                if i == 0 {
                    Reply::Close
                } else {
                    Reply::status(200).with_header("stream-next-offset", "0_1")
                }
            })
            .await;
            stream(&flaky).head().await.unwrap();
            assert_eq!(flaky.count(), 2, "a HEAD is retried");
        }

        #[tokio::test]
        async fn connect_errors_are_not_outcome_unknown() {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}/v1/stream/s", listener.local_addr().unwrap());
            drop(listener);
            let s = client(RedirectPolicy::default())
                .stream(url)
                .unwrap()
                .with_content_type("text/plain");
            let err = s.append("x").await.unwrap_err();
            assert_eq!(err.kind(), &ErrorKind::Network);
            assert!(!err.is_outcome_unknown(), "nothing was sent: {err}");
        }

        #[tokio::test]
        async fn writes_never_follow_a_redirect_that_would_lose_them() {
            for status in [301u16, 302, 303] {
                let server = ScriptedServer::start(move |_, _| {
                    Reply::status(status).with_header("location", "/v1/stream/other")
                })
                .await;
                let err = stream(&server).append("x").await.unwrap_err();
                assert_eq!(
                    err.kind(),
                    &ErrorKind::Redirect {
                        status,
                        location: Some(server.url("/v1/stream/other")),
                    }
                );
                assert_eq!(server.count(), 1, "nothing followed for {status}");
            }
        }

        #[tokio::test]
        async fn writes_follow_same_origin_307_with_the_body() {
            let server = ScriptedServer::start(|req, _| {
                if req.path() == "/v1/stream/s" {
                    Reply::status(307).with_header("location", "/v1/stream/moved")
                } else {
                    appended()
                }
            })
            .await;
            stream(&server).append("payload").await.unwrap();
            let seen = server.requests();
            assert_eq!(seen.len(), 2);
            assert_eq!(seen[1].method, "POST");
            assert_eq!(seen[1].path(), "/v1/stream/moved");
            assert_eq!(seen[1].body, b"payload");

            let other = ScriptedServer::start(|_, _| appended()).await;
            let to = other.url("/v1/stream/s");
            let cross =
                ScriptedServer::start(move |_, _| Reply::status(308).with_header("location", &to))
                    .await;
            let err = stream(&cross).append("x").await.unwrap_err();
            assert!(matches!(
                err.kind(),
                ErrorKind::Redirect { status: 308, .. }
            ));
            assert_eq!(other.count(), 0, "a write never crosses origins");
        }

        #[tokio::test]
        async fn reads_cross_origins_only_when_allowed_and_without_credentials() {
            let other = ScriptedServer::start(|_, _| {
                Reply::status(200).with_header("stream-next-offset", "0_1")
            })
            .await;
            let to = other.url("/elsewhere");
            let origin =
                ScriptedServer::start(move |_, _| Reply::status(302).with_header("location", &to))
                    .await;
            let url = origin.url("/v1/stream/s");
            let refused = client(RedirectPolicy::default())
                .stream(&url)
                .unwrap()
                .head()
                .await
                .unwrap_err();
            assert!(matches!(
                refused.kind(),
                ErrorKind::Redirect { status: 302, .. }
            ));
            assert_eq!(other.count(), 0);

            let s = client(RedirectPolicy::AnyOrigin)
                .stream(&url)
                .unwrap()
                .with_header("authorization", "Bearer s3cret")
                .with_header_fn("x-signed", || "computed".to_owned())
                .with_header("x-tenant", "acme")
                .with_param_fn("token", || "t0k3n".to_owned())
                .with_param("region", "eu");
            s.head().await.unwrap();
            let seen = other.requests();
            assert_eq!(seen.len(), 1);
            assert_eq!(seen[0].header("x-tenant"), Some("acme"));
            assert_eq!(seen[0].header("authorization"), None);
            assert_eq!(seen[0].header("x-signed"), None);
            assert!(!seen[0].target.contains("t0k3n"), "{}", seen[0].target);
            assert!(seen[0].target.contains("region=eu"), "{}", seen[0].target);
            let first = origin.requests().pop().unwrap();
            assert_eq!(first.header("authorization"), Some("Bearer s3cret"));
        }

        #[tokio::test]
        async fn refused_credentials_call_the_refresh_hook() {
            let server = ScriptedServer::start(|req, _| {
                if req.header("authorization") == Some("Bearer fresh") {
                    Reply::status(200).with_header("stream-next-offset", "0_1")
                } else {
                    Reply::status(401)
                }
            })
            .await;
            let calls = std::sync::Arc::new(AtomicUsize::new(0));
            let counted = std::sync::Arc::clone(&calls);
            let s = stream(&server)
                .with_header("authorization", "Bearer expired")
                .with_auth_refresh(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async { Ok(Some("Bearer fresh".to_owned())) }
                });
            s.head().await.unwrap();
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            // The refreshed value is kept for clones and later requests.
            s.clone().head().await.unwrap();
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            assert_eq!(server.count(), 3);

            let never = ScriptedServer::start(|_, _| Reply::status(401)).await;
            let s = stream(&never).with_auth_refresh(|| async { Ok(None) });
            let err = s.head().await.unwrap_err();
            assert_eq!(err.kind(), &ErrorKind::Unauthorized { status: 401 });
            assert_eq!(never.count(), 3, "two refreshes, then the error");

            let plain = ScriptedServer::start(|_, _| Reply::status(403)).await;
            let err = stream(&plain).head().await.unwrap_err();
            assert_eq!(err.kind(), &ErrorKind::Unauthorized { status: 403 });
            assert_eq!(plain.count(), 1);
        }

        #[tokio::test]
        async fn an_applied_append_without_an_offset_is_success() {
            let server = ScriptedServer::start(|_, _| Reply::status(204)).await;
            let r = stream(&server).append("x").await.unwrap();
            assert_eq!(r.next_offset, None);
            assert_eq!(server.count(), 1);
        }

        #[tokio::test]
        async fn errors_do_not_show_query_tokens() {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!(
                "http://user:pw@{}/v1/stream/s?token=abc",
                listener.local_addr().unwrap()
            );
            drop(listener);
            let err = client(RedirectPolicy::default())
                .stream(url)
                .unwrap()
                .head()
                .await
                .unwrap_err();
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains("abc") && !shown.contains("pw"), "{shown}");
            }
        }
    }
}
