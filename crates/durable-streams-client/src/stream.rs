//! [`Stream`]: the cold handle, and every stream operation.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde::Serialize;

use crate::client::Client;
use crate::error::{DecodeKind, Error, Result};
use crate::offset::Offset;
use crate::request::{
    BufferedResponse, Idempotency, RequestSpec, ResponseMeta, ValueSource, error_from_response,
    header_str, names,
};
use crate::retry::Backoff;
use crate::transport::{Auth, RefreshFuture, Target};

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
    fn target(&self) -> Target<'_> {
        Target {
            url: &self.url,
            headers: &self.headers,
            params: &self.params,
            auth: &self.auth,
        }
    }

    fn transport(&self) -> &crate::transport::Transport {
        self.client.transport()
    }

    /// Send until response headers arrive; retries draw on `backoff`.
    pub(crate) async fn send_retrying(
        &self,
        spec: &RequestSpec,
        backoff: &mut Backoff,
    ) -> Result<reqwest::Response> {
        // Boxed: the transport's future is large, and inlining it would
        // grow every idle reader's state (one per subscriber) by its size.
        Box::pin(self.transport().send(&self.target(), spec, backoff)).await
    }

    /// Send and read the whole body, with a fresh [`Backoff`].
    pub(crate) async fn send_buffered(&self, spec: &RequestSpec) -> Result<BufferedResponse> {
        let mut backoff = Backoff::new(self.client.retry_policy());
        self.send_buffered_retrying(spec, &mut backoff).await
    }

    /// Send and read the whole body; retries (of the request and of a
    /// broken body) draw on `backoff`.
    pub(crate) async fn send_buffered_retrying(
        &self,
        spec: &RequestSpec,
        backoff: &mut Backoff,
    ) -> Result<BufferedResponse> {
        Box::pin(
            self.transport()
                .send_buffered(&self.target(), spec, backoff),
        )
        .await
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
        self.modify(|s| s.content_type = Some(ct))
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
        if let Some(ct) = ct
            && let Ok(mut slot) = self.inner.learned_content_type.write()
        {
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

    /// Create the stream with the handle's content type (or the server's
    /// default). Idempotent: an existing stream with the same configuration
    /// is success with `created == false`.
    pub async fn create(&self) -> Result<CreateResult> {
        self.create_with(CreateOptions::default()).await
    }

    /// Create the stream with options (PUT).
    pub async fn create_with(&self, options: CreateOptions) -> Result<CreateResult> {
        let mut spec = RequestSpec::new(Method::PUT, "create");
        let content_type = options.content_type.clone().or_else(|| self.content_type());
        if let Some(ct) = &content_type {
            spec = spec.header("content-type", ct)?;
        }
        spec = options.expiry.apply(spec)?;
        if options.closed {
            spec = spec.header(names::CLOSED, "true")?;
        }
        if let Some(fork) = &options.fork {
            spec = spec.header(names::FORKED_FROM, &fork.source_path)?;
            if let Some(offset) = &fork.offset {
                spec = spec.header(names::FORK_OFFSET, offset.as_str())?;
            }
            if let Some(sub) = fork.sub_offset {
                spec = spec.header(names::FORK_SUB_OFFSET, sub.to_string())?;
            }
        }
        if let Some(body) = options.body {
            spec = spec.body(body);
        }
        let resp = self.execute(&spec).await?;
        if !matches!(
            resp.status,
            StatusCode::OK | StatusCode::CREATED | StatusCode::NO_CONTENT
        ) {
            return Err(self.error_for(&spec, &resp));
        }
        let meta = self.meta(&resp)?;
        let learned = meta.content_type.clone().or(content_type);
        self.learn_content_type(learned.as_deref());
        Ok(CreateResult {
            created: resp.status == StatusCode::CREATED,
            next_offset: meta.next_offset,
            content_type: learned,
            closed: meta.closed,
        })
    }

    /// Create this stream as a fork of another stream on the same server
    /// (PROTOCOL.md 4.2). The content type is inherited unless given.
    pub async fn fork(&self, fork: ForkOptions, options: CreateOptions) -> Result<CreateResult> {
        self.create_with(CreateOptions {
            fork: Some(fork),
            ..options
        })
        .await
    }

    pub(crate) async fn resolve_content_type(&self) -> Result<String> {
        if let Some(ct) = self.content_type() {
            return Ok(ct);
        }
        let info = self.head().await?;
        info.content_type.ok_or_else(|| {
            Error::decode(DecodeKind::Header, "HEAD returned no Content-Type")
                .with_url(&self.inner.url)
        })
    }

    /// Append bytes (POST). Returns the new tail offset.
    ///
    /// If the connection breaks after the body was sent, the outcome is
    /// unknown: the error says so ([`Error::is_outcome_unknown`]) and the
    /// append is not retried unless [`AppendOptions::retry_unknown_outcome`]
    /// is set. For safe retries at volume use the idempotent producer.
    pub async fn append(&self, data: impl Into<Bytes>) -> Result<AppendResult> {
        self.append_with(data, AppendOptions::default()).await
    }

    /// Append bytes with options (`Stream-Seq`, close, content type, retries).
    pub async fn append_with(
        &self,
        data: impl Into<Bytes>,
        options: AppendOptions,
    ) -> Result<AppendResult> {
        let data = data.into();
        if data.is_empty() && !options.close {
            return Err(
                Error::invalid_argument("data", "an append needs a non-empty body")
                    .with_url(&self.inner.url),
            );
        }
        let content_type = match options.content_type {
            Some(ct) => ct,
            None => self.resolve_content_type().await?,
        };
        let mut spec = RequestSpec::new(Method::POST, "append")
            .header("content-type", &content_type)?
            .body(data);
        if let Some(seq) = &options.seq {
            spec = spec.header(names::SEQ, seq)?;
        }
        if options.close {
            spec = spec.header(names::CLOSED, "true")?;
        }
        if options.retry_unknown_outcome {
            spec = spec.idempotency(Idempotency::Safe);
        }
        let resp = self.execute(&spec).await?;
        if !resp.status.is_success() {
            return Err(self.error_for(&spec, &resp));
        }
        // The server applied the write: a missing or malformed header must
        // not turn it into an error that a caller would retry (and duplicate).
        let next_offset = match header_str(&resp.headers, names::NEXT_OFFSET) {
            Some(v) => Offset::from_server(v).ok(),
            None => None,
        };
        if next_offset.is_none() {
            tracing::warn!(path = %self.inner.url.path(), "append succeeded without a valid Stream-Next-Offset (a proxy may strip it); the new offset is unknown");
        }
        Ok(AppendResult {
            next_offset,
            closed: crate::request::header_is_true(&resp.headers, names::CLOSED),
        })
    }

    /// Append one JSON value as one message (sent as `[value]`, so arrays are
    /// stored as one message too; PROTOCOL.md 9.1.2).
    pub fn append_json<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> impl Future<Output = Result<AppendResult>> + Send + '_ {
        // Encode before the future so it does not borrow `value` (keeps it `Send`).
        let body = crate::json::single_message_body(value).map_err(|e| e.with_url(&self.inner.url));
        async move { self.append_with(body?, AppendOptions::json()).await }
    }

    /// Append several JSON values as separate messages in one request (sent as
    /// `[a,b,...]`). An empty batch is an `InvalidArgument` error; no request is made.
    pub async fn append_json_batch<T, I>(&self, values: I) -> Result<AppendResult>
    where
        T: Serialize,
        I: IntoIterator<Item = T>,
    {
        let body = crate::json::batch_body(values).map_err(|e| e.with_url(&self.inner.url))?;
        self.append_with(body, AppendOptions::json()).await
    }

    /// Close the stream (EOF for readers). Idempotent: closing a closed
    /// stream succeeds. Returns the final offset.
    pub async fn close(&self) -> Result<CloseResult> {
        let spec = RequestSpec::new(Method::POST, "close")
            .header(names::CLOSED, "true")?
            .idempotency(Idempotency::Safe);
        let resp = self.execute(&spec).await?;
        if !resp.status.is_success() {
            return Err(self.error_for(&spec, &resp));
        }
        let meta = self.meta(&resp)?;
        Ok(CloseResult {
            final_offset: meta.next_offset,
        })
    }

    /// Append a final message and close the stream atomically. Fails with
    /// `StreamClosed` if the stream is already closed.
    pub async fn close_with(&self, final_data: impl Into<Bytes>) -> Result<CloseResult> {
        let r = self
            .append_with(
                final_data,
                AppendOptions {
                    close: true,
                    ..AppendOptions::default()
                },
            )
            .await?;
        Ok(CloseResult {
            final_offset: r.next_offset,
        })
    }

    /// Append one final JSON message and close the stream atomically.
    pub fn close_with_json<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> impl Future<Output = Result<CloseResult>> + Send + '_ {
        let body = crate::json::single_message_body(value).map_err(|e| e.with_url(&self.inner.url));
        async move {
            let options = AppendOptions {
                close: true,
                ..AppendOptions::json()
            };
            let r = self.append_with(body?, options).await?;
            Ok(CloseResult {
                final_offset: r.next_offset,
            })
        }
    }

    /// Delete the stream.
    pub async fn delete(&self) -> Result<()> {
        let spec = RequestSpec::new(Method::DELETE, "delete");
        let resp = self.execute(&spec).await?;
        if !resp.status.is_success() {
            return Err(self.error_for(&spec, &resp));
        }
        Ok(())
    }

    /// Fetch metadata (HEAD): tail offset, content type, TTL, expiry, closure, ETag.
    pub async fn head(&self) -> Result<StreamInfo> {
        let spec = RequestSpec::new(Method::HEAD, "head");
        let resp = self.execute(&spec).await?;
        if !resp.status.is_success() {
            return Err(self.error_for(&spec, &resp));
        }
        let meta = self.meta(&resp)?;
        self.learn_content_type(meta.content_type.as_deref());
        let ttl = match header_str(&resp.headers, names::TTL) {
            Some(v) => Some(Duration::from_secs(v.parse().map_err(|_| {
                Error::decode(
                    DecodeKind::Header,
                    format!("Stream-TTL is not an integer: {v:?}"),
                )
                .with_url(&self.inner.url)
            })?)),
            None => None,
        };
        let expires_at_raw = header_str(&resp.headers, names::EXPIRES_AT).map(str::to_owned);
        Ok(StreamInfo {
            next_offset: meta
                .require_next_offset()
                .map_err(|e| e.with_url(&self.inner.url))?,
            content_type: meta.content_type,
            ttl,
            expires_at: expires_at_raw
                .as_deref()
                .and_then(|v| humantime::parse_rfc3339_weak(v).ok()),
            expires_at_raw,
            closed: meta.closed,
            etag: meta.etag,
        })
    }
}

fn set_source(list: &mut Vec<(String, ValueSource)>, name: String, source: ValueSource) {
    list.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
    list.push((name, source));
}

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
    fn apply(&self, spec: RequestSpec) -> Result<RequestSpec> {
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
    content_type: Option<String>,
    expiry: Expiry,
    body: Option<Bytes>,
    closed: bool,
    fork: Option<ForkOptions>,
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
    source_path: String,
    offset: Option<Offset>,
    sub_offset: Option<u64>,
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
