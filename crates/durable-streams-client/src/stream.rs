//! [`Stream`]: the cold handle, its headers, parameters and caches. The
//! operations are in `ops.rs`, their options and results in `options.rs`.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::offset::Offset;
use crate::request::{
    BufferedResponse, RequestSpec, ResponseMeta, ValueSource, error_from_response,
};
use crate::retry::Backoff;
use crate::transport::{Auth, RefreshFuture, Target};

mod ops;
mod options;

pub(crate) use self::options::is_json_content_type;
pub use self::options::{
    AppendOptions, AppendResult, CloseResult, CreateOptions, CreateResult, ForkOptions, StreamInfo,
};

/// The JSON content type, which has message semantics (PROTOCOL.md 9.1).
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// A cold, cheap handle to one stream URL. Creating or cloning it does no I/O;
/// each operation makes its own requests. `Clone + Send + Sync`.
///
/// Headers and query parameters set here go on every request made for this
/// stream, including those of producers and consumers built from it. They may
/// be static or computed per request (for example a refreshed token).
///
/// ```no_run
/// # async fn demo() -> durable_streams_client::Result<()> {
/// use durable_streams_client::{Client, CreateOptions};
/// let client = Client::new();
/// let stream = client
///     .stream("http://127.0.0.1:4437/v1/stream/events")?
///     .with_header_fn("authorization", || format!("Bearer {}", "fresh-token"));
/// stream.create_with(CreateOptions::json()).await?;
/// stream.append_json(&serde_json::json!({"event": "created"})).await?;
/// let items: Vec<serde_json::Value> = stream.read_json().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Stream {
    pub(crate) inner: Arc<StreamInner>,
}

#[derive(Clone)]
pub(crate) struct StreamInner {
    pub(crate) client: Client,
    pub(crate) url: url::Url,
    pub(crate) headers: Vec<(String, ValueSource)>,
    pub(crate) params: Vec<(String, ValueSource)>,
    pub(crate) content_type: Option<String>,
    /// `content_type` as a header value, made once (appends send it).
    pub(crate) content_type_value: Option<reqwest::header::HeaderValue>,
    /// Content type learned from the server (create, HEAD, reads), shared by clones.
    pub(crate) learned_content_type: Arc<RwLock<Option<String>>>,
    /// ETag of the last empty catch-up response at the tail, shared by clones:
    /// a later catch-up from the same offset sends `If-None-Match`, and a 304
    /// means "still nothing new" without transferring a body.
    pub(crate) tail_etag: Arc<std::sync::Mutex<Option<(Offset, String)>>>,
    /// Credential refresh hook and the value it last set, shared by clones.
    pub(crate) auth: Auth,
}

impl StreamInner {
    pub(crate) fn target(&self) -> Target<'_> {
        Target {
            url: &self.url,
            headers: &self.headers,
            params: &self.params,
            auth: &self.auth,
        }
    }

    pub(crate) fn transport(&self) -> &crate::transport::Transport {
        self.client.transport()
    }

    /// Send until response headers arrive; retries draw on `backoff`.
    ///
    /// Boxed: the transport's future is large, and inlining it would grow
    /// every idle reader's state (one per subscriber) by its size. A trait
    /// object made in a function never inlined: a caller's crate that
    /// instantiates a generic operation calls this one copy of the request
    /// path rather than compiling a copy of its own (one copy of the code
    /// to keep in cache whichever operation runs).
    #[inline(never)]
    pub(crate) fn send_retrying<'a>(
        &'a self,
        spec: &'a RequestSpec,
        backoff: &'a mut Backoff,
    ) -> BoxFuture<'a, Result<crate::http::Response>> {
        Box::pin(async move { self.transport().send(&self.target(), spec, backoff).await })
    }

    /// Send and read the whole body, with a fresh [`Backoff`].
    pub(crate) async fn send_buffered(&self, spec: &RequestSpec) -> Result<BufferedResponse> {
        let mut backoff = Backoff::new(self.client.retry_policy());
        self.send_buffered_retrying(spec, &mut backoff).await
    }

    /// Send and read the whole body; retries (of the request and of a
    /// broken body) draw on `backoff`. Boxed and never inlined, like
    /// [`Self::send_retrying`].
    #[inline(never)]
    pub(crate) fn send_buffered_retrying<'a>(
        &'a self,
        spec: &'a RequestSpec,
        backoff: &'a mut Backoff,
    ) -> BoxFuture<'a, Result<BufferedResponse>> {
        Box::pin(async move {
            self.transport()
                .send_buffered(&self.target(), spec, backoff)
                .await
        })
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<_> = self
            .inner
            .headers
            .iter()
            .map(|(name, source)| {
                let shown = match source {
                    ValueSource::Static(v) if !crate::transport::is_secret_header(name) => {
                        v.clone()
                    }
                    _ => "<redacted>".to_owned(),
                };
                (name.clone(), shown)
            })
            .collect();
        let params: Vec<_> = self
            .inner
            .params
            .iter()
            .map(|(name, source)| (name.clone(), format!("{source:?}")))
            .collect();
        f.debug_struct("Stream")
            .field("url", &crate::error::redacted_url(&self.inner.url))
            .field("headers", &headers)
            .field("params", &params)
            .field("content_type", &self.content_type())
            .finish()
    }
}

impl Client {
    /// A cold handle for the stream at `url`. No I/O happens here.
    pub fn stream(&self, url: impl AsRef<str>) -> Result<Stream> {
        let raw = url.as_ref();
        let url = url::Url::parse(raw)
            .map_err(|e| Error::invalid_argument("url", format!("{raw:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid_argument(
                "url",
                format!("scheme must be http or https, got {}", url.scheme()),
            ));
        }
        Ok(Stream::new(self.clone(), url))
    }

    /// A cold handle for the stream `name` on the server at `base_url`, using
    /// the reference servers' layout (see [`Client::stream_url`]).
    ///
    /// ```
    /// use durable_streams_client::Client;
    /// let client = Client::new();
    /// let stream = client.stream_at("http://127.0.0.1:4437", "orders").unwrap();
    /// assert_eq!(stream.url().as_str(), "http://127.0.0.1:4437/v1/stream/orders");
    /// ```
    pub fn stream_at(&self, base_url: &str, name: &str) -> Result<Stream> {
        self.stream(Client::stream_url(base_url, name)?)
    }
}

impl Stream {
    /// A handle on another URL with this handle's headers, parameters and
    /// credential hook (for control routes and streams under one root).
    pub(crate) fn sibling(&self, url: url::Url) -> Stream {
        Stream {
            inner: Arc::new(StreamInner {
                client: self.inner.client.clone(),
                url,
                headers: self.inner.headers.clone(),
                params: self.inner.params.clone(),
                content_type: None,
                content_type_value: None,
                learned_content_type: Arc::new(RwLock::new(None)),
                tail_etag: Arc::new(std::sync::Mutex::new(None)),
                auth: self.inner.auth.clone(),
            }),
        }
    }

    pub(crate) fn new(client: Client, url: url::Url) -> Stream {
        Stream {
            inner: Arc::new(StreamInner {
                client,
                url,
                headers: Vec::new(),
                params: Vec::new(),
                content_type: None,
                content_type_value: None,
                learned_content_type: Arc::new(RwLock::new(None)),
                tail_etag: Arc::new(std::sync::Mutex::new(None)),
                auth: Auth::default(),
            }),
        }
    }

    fn modify(mut self, f: impl FnOnce(&mut StreamInner)) -> Stream {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// The stream URL.
    pub fn url(&self) -> &url::Url {
        &self.inner.url
    }

    /// The client this handle uses.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Add a static header to every request for this stream. An invalid name
    /// or value is reported as `InvalidArgument` by the first operation.
    pub fn with_header(self, name: impl Into<String>, value: impl Into<String>) -> Stream {
        let (name, value) = (name.into(), value.into());
        self.modify(|s| set_source(&mut s.headers, name, ValueSource::Static(value)))
    }

    /// Add a header computed on every request (and every retry), e.g. a token
    /// that is refreshed. Its value is never logged.
    pub fn with_header_fn(
        self,
        name: impl Into<String>,
        value: impl Fn() -> String + Send + Sync + 'static,
    ) -> Stream {
        let name = name.into();
        self.modify(|s| set_source(&mut s.headers, name, ValueSource::Sync(Arc::new(value))))
    }

    /// Add a header computed asynchronously on every request (e.g. fetched
    /// from a token service). Its value is never logged.
    pub fn with_header_async<F, Fut>(self, name: impl Into<String>, value: F) -> Stream
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = String> + Send + 'static,
    {
        let name = name.into();
        let source = ValueSource::Async(Arc::new(move || Box::pin(value())));
        self.modify(|s| set_source(&mut s.headers, name, source))
    }

    /// Call `refresh` when the server refuses the credentials (401, or 403
    /// that is not a producer's stale epoch), then retry the request, at most
    /// twice per request. The hook may return a new `Authorization` value
    /// (kept for every clone of this handle and sent from then on), or
    /// `None` after updating whatever a computed header reads. An error from
    /// the hook, or a third refusal, ends the operation with
    /// [`ErrorKind::Unauthorized`](crate::ErrorKind::Unauthorized). Applies
    /// to every request: reads and live reads, consumers, producers.
    ///
    /// ```no_run
    /// # fn demo(client: durable_streams_client::Client) -> durable_streams_client::Result<()> {
    /// let stream = client
    ///     .stream("http://127.0.0.1:4437/v1/stream/orders")?
    ///     .with_header("authorization", "Bearer expiring")
    ///     .with_auth_refresh(|| async { Ok(Some(format!("Bearer {}", "fresh"))) });
    /// # drop(stream); Ok(()) }
    /// ```
    pub fn with_auth_refresh<F, Fut>(self, refresh: F) -> Stream
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<String>>> + Send + 'static,
    {
        let hook = Arc::new(move || -> RefreshFuture { Box::pin(refresh()) });
        self.modify(|s| {
            s.auth = Auth {
                refresh: Some(hook),
                authorization: Arc::new(RwLock::new(None)),
            };
        })
    }

    /// Add a static query parameter to every request for this stream.
    pub fn with_param(self, name: impl Into<String>, value: impl Into<String>) -> Stream {
        let (name, value) = (name.into(), value.into());
        self.modify(|s| set_source(&mut s.params, name, ValueSource::Static(value)))
    }

    /// Add a query parameter computed on every request.
    pub fn with_param_fn(
        self,
        name: impl Into<String>,
        value: impl Fn() -> String + Send + Sync + 'static,
    ) -> Stream {
        let name = name.into();
        self.modify(|s| set_source(&mut s.params, name, ValueSource::Sync(Arc::new(value))))
    }

    /// Add a query parameter computed asynchronously on every request.
    pub fn with_param_async<F, Fut>(self, name: impl Into<String>, value: F) -> Stream
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = String> + Send + 'static,
    {
        let name = name.into();
        let source = ValueSource::Async(Arc::new(move || Box::pin(value())));
        self.modify(|s| set_source(&mut s.params, name, source))
    }

    /// Remove every header and parameter set on this handle.
    pub fn without_headers_and_params(self) -> Stream {
        self.modify(|s| {
            s.headers.clear();
            s.params.clear();
        })
    }

    /// The content type used for appends and creates. Without it, the
    /// content type is learned from the server (create, HEAD, reads) and, if
    /// still unknown at the first append, fetched with one HEAD.
    pub fn with_content_type(self, content_type: impl Into<String>) -> Stream {
        let ct = content_type.into();
        // Not a valid header value: appends report it when they build one.
        let value = reqwest::header::HeaderValue::from_str(&ct).ok();
        self.modify(|s| {
            s.content_type = Some(ct);
            s.content_type_value = value;
        })
    }

    /// The content type set on the handle or learned from the server, if known.
    pub fn content_type(&self) -> Option<String> {
        self.inner.content_type.clone().or_else(|| {
            self.inner
                .learned_content_type
                .read()
                .ok()
                .and_then(|g| g.clone())
        })
    }

    pub(crate) fn learn_content_type(&self, ct: Option<&str>) {
        let Some(ct) = ct else { return };
        // Every catch-up answer says it again: a read lock, no copy, when
        // nothing changed.
        let known = self.inner.learned_content_type.read().ok();
        if known.is_some_and(|slot| slot.as_deref() == Some(ct)) {
            return;
        }
        if let Ok(mut slot) = self.inner.learned_content_type.write() {
            *slot = Some(ct.to_owned());
        }
    }

    pub(crate) fn tail_etag_for(&self, offset: &Offset) -> Option<String> {
        let slot = self.inner.tail_etag.lock().ok()?;
        slot.as_ref()
            .filter(|(at, _)| at == offset)
            .map(|(_, etag)| etag.clone())
    }

    pub(crate) fn remember_tail_etag(&self, entry: Option<(Offset, String)>) {
        if let Ok(mut slot) = self.inner.tail_etag.lock() {
            *slot = entry;
        }
    }

    /// Whether the stream's content type is JSON (message mode).
    pub(crate) fn is_json(&self) -> bool {
        self.content_type()
            .is_some_and(|ct| is_json_content_type(&ct))
    }

    pub(crate) async fn execute(&self, spec: &RequestSpec) -> Result<BufferedResponse> {
        self.inner.send_buffered(spec).await
    }

    pub(crate) fn error_for(&self, spec: &RequestSpec, resp: &BufferedResponse) -> Error {
        error_from_response(spec, resp.status, &resp.headers, &resp.body).with_url(&self.inner.url)
    }

    pub(crate) fn meta(&self, resp: &BufferedResponse) -> Result<ResponseMeta> {
        ResponseMeta::from_headers(&resp.headers).map_err(|e| {
            e.with_url(&self.inner.url)
                .with_status(resp.status.as_u16())
        })
    }
}

fn set_source(list: &mut Vec<(String, ValueSource)>, name: String, source: ValueSource) {
    list.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
    list.push((name, source));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let s = Client::new()
            .stream("http://h/v1/stream/a?token=qs-secret")
            .unwrap()
            .with_header("authorization", "Bearer static-secret")
            .with_header_fn("x-trace", || "dynamic-secret".into())
            .with_header("x-tenant", "acme")
            .with_param_fn("auth", || "param-secret".into());
        let shown = format!("{s:?}");
        for secret in [
            "qs-secret",
            "static-secret",
            "dynamic-secret",
            "param-secret",
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("acme"));
    }

    #[test]
    fn with_header_replaces_case_insensitively() {
        let s = Client::new()
            .stream("http://h/s")
            .unwrap()
            .with_header("X-A", "1")
            .with_header("x-a", "2");
        assert_eq!(s.inner.headers.len(), 1);
    }
}
