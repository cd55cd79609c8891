//! The HTTP engine under the transport: one request out, one response (head
//! and body) back, nothing else. Plain `http://` requests go straight to
//! hyper's pooled HTTP/1.1 client, except SSE reads, which each get a
//! connection of their own read by the reader's task (`http_events.rs`);
//! everything that needs more (TLS, a proxy,
//! HTTP/2, decompression, URL credentials, a handed-in `reqwest::Client`)
//! goes through reqwest. Why two: reqwest costs about 15 µs of CPU per
//! request over hyper (its redirect layer re-parses the URL, headers are
//! copied, timers boxed), which is most of the client's per-request
//! overhead on a local network. Both paths keep the same contract: the same
//! headers on the wire (user agent, `accept: */*`), a total timeout for
//! non-live requests, an idle timeout on every wait for bytes, TCP
//! keepalive, and errors that tell "nothing was sent" from "may have been".

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use futures::stream::BoxStream;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio::time::{Instant, Sleep};

use crate::error::BoxError;

/// A response body as a stream of byte pieces.
pub(crate) type BodyStream = BoxStream<'static, Result<Bytes, HttpError>>;

/// Settings of the direct (hyper) path; the reqwest client gets the same.
#[derive(Debug, Clone)]
pub(crate) struct DirectSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) pool_max_idle_per_host: usize,
    pub(crate) pool_idle_timeout: Option<Duration>,
    /// Read SSE responses in pieces of at most this size.
    pub(crate) sse_read_buffer: Option<usize>,
}

/// reqwest's TCP keepalive defaults, so both paths notice a dead peer alike.
const KEEPALIVE: Duration = Duration::from_secs(15);
const KEEPALIVE_RETRIES: u32 = 3;

/// Sends requests; cheap to share (both clients are handles on a pool).
pub(crate) struct HttpEngine {
    reqwest: reqwest::Client,
    direct: Option<Direct>,
    /// The reqwest client was handed in: it may follow redirects by itself.
    preconfigured: bool,
}

struct Direct {
    client: HyperClient<HttpConnector, Full<Bytes>>,
    /// SSE reads connect through it, each on a connection of its own
    /// (`http_events.rs`).
    connector: HttpConnector,
    /// Most bytes an SSE read takes from its socket at once.
    sse_read_size: usize,
    idle_timeout: Duration,
}

impl fmt::Debug for HttpEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpEngine")
            .field("direct", &self.direct.is_some())
            .field("preconfigured", &self.preconfigured)
            .finish_non_exhaustive()
    }
}

/// One request, as the transport built it.
pub(crate) struct OutgoingRequest<'a> {
    pub(crate) method: Method,
    /// Where it goes; its own query and fragment are not sent: `sent`'s are.
    pub(crate) url: &'a url::Url,
    /// The URL as sent, with the request's query.
    pub(crate) sent: SentUrl,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// Total time for the answer and its body (none for live reads).
    pub(crate) timeout: Option<Duration>,
    /// An SSE read (held open for events).
    pub(crate) event_stream: bool,
}

impl OutgoingRequest<'_> {
    /// The URL sent, as a `url::Url` (for reqwest).
    fn full_url(&self) -> url::Url {
        let mut url = self.url.clone();
        url.set_query(self.sent.query());
        url.set_fragment(None);
        url
    }
}

/// A request's URL as sent: the target URL up to its path (its own query
/// and fragment dropped), then `?` and the encoded query when there is one.
#[derive(Debug, Clone)]
pub(crate) struct SentUrl {
    text: String,
    /// Where the query begins (after the `?`), when there is one.
    query_at: Option<usize>,
}

impl SentUrl {
    /// `url` up to its path, then the query `encode` writes (nothing: no
    /// query).
    pub(crate) fn new(url: &url::Url, encode: impl FnOnce(&mut String)) -> Self {
        let base = &url[..url::Position::AfterPath];
        // A read's query (offset, cursor, live mode) is 70-100 bytes: no regrowth.
        let mut text = String::with_capacity(base.len() + 128);
        text.push_str(base);
        text.push('?');
        let query_at = text.len();
        encode(&mut text);
        if text.len() == query_at {
            text.pop();
            return SentUrl {
                text,
                query_at: None,
            };
        }
        SentUrl {
            text,
            query_at: Some(query_at),
        }
    }

    /// The encoded query, without the `?`.
    pub(crate) fn query(&self) -> Option<&str> {
        self.query_at.map(|at| &self.text[at..])
    }

    /// As hyper's `Uri`: the string handed over as it is, without the
    /// clone and re-parse of the `url::Url` that `full_url` costs.
    fn into_uri(self) -> Result<hyper::Uri, HttpError> {
        hyper::Uri::try_from(self.text).map_err(HttpError::invalid)
    }
}

impl HttpEngine {
    /// An engine over `reqwest`; with `direct`, plain `http://` requests
    /// bypass it.
    pub(crate) fn new(
        reqwest: reqwest::Client,
        direct: Option<DirectSettings>,
        preconfigured: bool,
    ) -> Self {
        let direct = direct.map(|s| {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            connector.set_connect_timeout(Some(s.connect_timeout));
            connector.set_keepalive(Some(KEEPALIVE));
            connector.set_keepalive_interval(Some(KEEPALIVE));
            connector.set_keepalive_retries(Some(KEEPALIVE_RETRIES));
            let mut builder = HyperClient::builder(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(s.pool_idle_timeout)
                .pool_max_idle_per_host(s.pool_max_idle_per_host);
            Direct {
                client: builder.build(connector.clone()),
                connector,
                sse_read_size: s.sse_read_buffer.unwrap_or(events::SCRATCH),
                idle_timeout: s.idle_timeout,
            }
        });
        HttpEngine {
            reqwest,
            direct,
            preconfigured,
        }
    }

    /// Whether requests to `url` take the direct path.
    fn direct_for(&self, url: &url::Url) -> Option<&Direct> {
        let direct = self.direct.as_ref()?;
        // Credentials in the URL become a Basic header in reqwest only.
        (url.scheme() == "http" && url.username().is_empty() && url.password().is_none())
            .then_some(direct)
    }

    /// Send one request and wait for the response head.
    ///
    /// Not an `async fn`: the future holds only the path taken (reqwest's,
    /// rarely taken for plain HTTP, boxed), so a waiting request stays small.
    pub(crate) fn send<'a>(
        &'a self,
        mut req: OutgoingRequest<'a>,
    ) -> impl Future<Output = Result<Response, HttpError>> + Send + 'a {
        use futures::future::{Either, FutureExt};
        // Writes always say how long their body is, empty too: hyper sends
        // no length for an empty body, and some proxies answer 411 to that.
        if req.body.is_empty() && (req.method == Method::POST || req.method == Method::PUT) {
            req.headers.insert(
                reqwest::header::CONTENT_LENGTH,
                HeaderValue::from_static("0"),
            );
        }
        match self.direct_for(req.url) {
            Some(direct) => Either::Left(direct.send(req).map(|r| r.map(Response::Direct))),
            None => Either::Right(Box::pin(self.send_reqwest(req))),
        }
    }

    async fn send_reqwest(&self, req: OutgoingRequest<'_>) -> Result<Response, HttpError> {
        let url = req.full_url();
        let sent_url = self.preconfigured.then(|| url.clone());
        let mut request = reqwest::Request::new(req.method, url);
        *request.headers_mut() = req.headers;
        *request.timeout_mut() = req.timeout;
        if !req.body.is_empty() {
            *request.body_mut() = Some(req.body.into());
        }
        let resp = self
            .reqwest
            .execute(request)
            .await
            .map_err(HttpError::from_reqwest)?;
        // A handed-in client that follows redirects by itself may have
        // turned a write into a GET: reported, never used.
        let redirected_to = sent_url
            .filter(|sent| resp.url() != sent)
            .map(|_| resp.url().clone());
        Ok(Response::Reqwest {
            resp,
            redirected_to,
        })
    }
}

impl Direct {
    /// The request is built before the future starts, so the future holds
    /// only the timer and hyper's (boxed) response future, or the SSE
    /// read's (boxed) opening.
    fn send(
        &self,
        req: OutgoingRequest<'_>,
    ) -> impl Future<Output = Result<DirectResponse, HttpError>> + Send + 'static {
        let prepared = self.prepare(req);
        async move {
            let (answer, mut timer) = prepared?;
            let (head, body) = match answer {
                Answer::Hyper(answer) => {
                    let resp = timer.limit(answer).await?.map_err(HttpError::from_hyper)?;
                    let (head, body) = resp.into_parts();
                    (head, Source::Hyper(body))
                }
                Answer::Events(opening) => {
                    let (head, body) = timer.limit(opening).await??;
                    (head, Source::Events(Box::new(body)))
                }
            };
            Ok(DirectResponse {
                head,
                body: DirectBody {
                    body,
                    timer,
                    armed: true,
                    ended: false,
                },
            })
        }
    }

    fn prepare(&self, req: OutgoingRequest<'_>) -> Result<(Answer, Timer), HttpError> {
        let uri = req.sent.into_uri()?;
        let timer = Timer::new(req.timeout, self.idle_timeout);
        let mut headers = req.headers;
        headers
            .entry(reqwest::header::ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        if req.event_stream && req.method == Method::GET && req.body.is_empty() {
            let head = events::request_head(&uri, &headers)?;
            let opening = events::open(
                self.connector.clone(),
                events::EventRequest {
                    uri,
                    head,
                    read_size: self.sse_read_size,
                },
            );
            return Ok((Answer::Events(Box::pin(opening)), timer));
        }
        let mut parts = hyper::Request::new(()).into_parts().0;
        parts.method = req.method;
        parts.uri = uri;
        parts.headers = headers;
        let answer = self
            .client
            .request(hyper::Request::from_parts(parts, Full::new(req.body)));
        Ok((Answer::Hyper(answer), timer))
    }
}

/// A request on its way, by path.
enum Answer {
    Hyper(hyper_util::client::legacy::ResponseFuture),
    Events(Pin<Box<dyn Future<Output = EventsOpened> + Send>>),
}

type EventsOpened = Result<(http::response::Parts, events::EventBody), HttpError>;

/// Where a direct response's body comes from.
enum Source {
    Hyper(Incoming),
    /// Boxed: it is larger than hyper's handle, and every response,
    /// whatever its path, would pay for the difference.
    Events(Box<events::EventBody>),
}

impl Source {
    fn content_length(&self) -> Option<u64> {
        match self {
            Source::Hyper(body) => body.size_hint().exact(),
            Source::Events(body) => body.content_length(),
        }
    }

    /// The next body bytes onto the end of `out`: an SSE connection of our
    /// own decodes into it, hyper's body hands over a piece.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut BytesMut,
    ) -> Poll<Option<Result<(), HttpError>>> {
        match self {
            Source::Events(body) => body.poll_read_into(cx, out),
            Source::Hyper(_) => self
                .poll_piece(cx)
                .map(|piece| piece.map(|piece| piece.map(|piece| out.extend_from_slice(&piece)))),
        }
    }

    /// The next non-empty piece.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, HttpError>>> {
        let body = match self {
            Source::Events(body) => return body.poll_piece(cx),
            Source::Hyper(body) => body,
        };
        loop {
            return match std::task::ready!(Pin::new(&mut *body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => Poll::Ready(Some(Ok(data))),
                    // Empty data and trailers carry nothing for a reader.
                    _ => continue,
                },
                Some(Err(e)) => Poll::Ready(Some(Err(HttpError::new(e)))),
                None => Poll::Ready(None),
            };
        }
    }
}

/// The two timeouts of one request: the total `deadline` (none for live
/// reads) and `idle`, the longest wait for the next bytes. One sleep is
/// allocated per request. A new wait only notes when it began; the sleep
/// is moved when it fires early (a reset per body piece, in the timer
/// wheel, cost more than the rest of delivering a small SSE event).
struct Timer {
    deadline: Option<Instant>,
    idle: Duration,
    /// When the current wait for bytes began.
    waiting_since: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl Timer {
    /// Armed for the first wait. One clock read (each costs tens of
    /// nanoseconds on a virtual machine).
    fn new(timeout: Option<Duration>, idle: Duration) -> Self {
        let now = Instant::now();
        let deadline = timeout.map(|t| now + t);
        Timer {
            deadline,
            idle,
            waiting_since: now,
            sleep: Box::pin(tokio::time::sleep_until(Self::until(deadline, now + idle))),
        }
    }

    fn until(deadline: Option<Instant>, idle_until: Instant) -> Instant {
        deadline.map_or(idle_until, |d| d.min(idle_until))
    }

    /// A new wait for bytes begins now.
    fn arm(&mut self) {
        self.waiting_since = Instant::now();
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            // The sleep was set for an earlier wait: move it to this one's
            // end, unless that has passed too.
            let until = Self::until(self.deadline, self.waiting_since + self.idle);
            if until <= self.sleep.deadline() {
                return true;
            }
            self.sleep.as_mut().reset(until);
        }
    }

    /// Wait for `fut`, or fail with a timeout when the timer fires.
    async fn limit<F: Future>(&mut self, fut: F) -> Result<F::Output, HttpError> {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            if self.expired(cx) {
                return Poll::Ready(Err(HttpError::timeout()));
            }
            Poll::Pending
        })
        .await
    }
}

/// A response's head and body, from either path.
pub(crate) enum Response {
    Reqwest {
        resp: reqwest::Response,
        /// Where a handed-in client's redirects led, if anywhere.
        redirected_to: Option<url::Url>,
    },
    Direct(DirectResponse),
}

pub(crate) struct DirectResponse {
    head: http::response::Parts,
    body: DirectBody,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Response {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Response::Reqwest { resp, .. } => resp.status(),
            Response::Direct(d) => d.head.status,
        }
    }

    pub(crate) fn headers(&self) -> &HeaderMap {
        match self {
            Response::Reqwest { resp, .. } => resp.headers(),
            Response::Direct(d) => &d.head.headers,
        }
    }

    /// Move the headers out (the response keeps an empty map).
    pub(crate) fn take_headers(&mut self) -> HeaderMap {
        match self {
            Response::Reqwest { resp, .. } => std::mem::take(resp.headers_mut()),
            Response::Direct(d) => std::mem::take(&mut d.head.headers),
        }
    }

    /// Where a handed-in HTTP client followed a redirect to on its own.
    pub(crate) fn redirected_to(&self) -> Option<&url::Url> {
        match self {
            Response::Reqwest { redirected_to, .. } => redirected_to.as_ref(),
            Response::Direct(_) => None,
        }
    }

    /// The body's length, when the server said it.
    pub(crate) fn content_length(&self) -> Option<u64> {
        match self {
            Response::Reqwest { resp, .. } => resp.content_length(),
            Response::Direct(d) => d.body.body.content_length(),
        }
    }

    /// The next piece of the body; `None` at its end.
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        match self {
            Response::Reqwest { resp, .. } => resp.chunk().await.map_err(HttpError::from_reqwest),
            Response::Direct(d) => {
                use futures::StreamExt;
                d.body.next().await.transpose()
            }
        }
    }

    /// The body, read onto the end of the reader's own buffer.
    pub(crate) fn into_buffered_body(self) -> BufferedBody {
        match self {
            Response::Direct(d) => BufferedBody(BufferedSource::Direct(Box::new(d.body))),
            reqwest => BufferedBody::from_pieces(reqwest.into_body()),
        }
    }

    /// The body as a stream of pieces.
    pub(crate) fn into_body(self) -> BodyStream {
        use futures::{StreamExt, TryStreamExt};
        match self {
            Response::Reqwest { resp, .. } => {
                resp.bytes_stream().map_err(HttpError::from_reqwest).boxed()
            }
            Response::Direct(d) => d.body.boxed(),
        }
    }
}

/// A direct response's body under the request's timers.
struct DirectBody {
    body: Source,
    timer: Timer,
    /// The idle timer restarts before the next wait.
    armed: bool,
    ended: bool,
}

impl DirectBody {
    /// One read of the body (`read`) under the idle timeout and deadline.
    fn poll_timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        read: impl FnOnce(&mut Source, &mut Context<'_>) -> Poll<Option<Result<T, HttpError>>>,
    ) -> Poll<Option<Result<T, HttpError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if !self.armed {
            self.timer.arm();
            self.armed = true;
        }
        match read(&mut self.body, cx) {
            Poll::Ready(Some(Ok(data))) => {
                self.armed = false;
                return Poll::Ready(Some(Ok(data)));
            }
            Poll::Ready(other) => {
                self.ended = true;
                return Poll::Ready(other);
            }
            Poll::Pending => {}
        }
        if self.timer.expired(cx) {
            self.ended = true;
            return Poll::Ready(Some(Err(HttpError::timeout())));
        }
        Poll::Pending
    }
}

impl Stream for DirectBody {
    type Item = Result<Bytes, HttpError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_timed(cx, Source::poll_piece)
    }
}

/// A response body read onto the end of a buffer the reader keeps (an SSE
/// read's parser input): the direct path's own SSE connection decodes
/// straight into it, other bodies hand over their pieces.
pub(crate) struct BufferedBody(BufferedSource);

enum BufferedSource {
    Direct(Box<DirectBody>),
    Pieces(BodyStream),
}

impl BufferedBody {
    /// A body whose pieces are handed over (and copied onto the buffer).
    pub(crate) fn from_pieces(body: BodyStream) -> Self {
        BufferedBody(BufferedSource::Pieces(body))
    }

    /// The next body bytes onto the end of `out` (`Some(Ok(()))`: at least
    /// one byte added); `None` at the body's end.
    pub(crate) async fn read_into(&mut self, out: &mut BytesMut) -> Option<Result<(), HttpError>> {
        use futures::StreamExt;
        match &mut self.0 {
            BufferedSource::Direct(body) => {
                std::future::poll_fn(|cx| {
                    body.poll_timed(cx, |source, cx| source.poll_read_into(cx, out))
                })
                .await
            }
            BufferedSource::Pieces(body) => {
                let piece = body.next().await?;
                Some(piece.map(|piece| out.extend_from_slice(&piece)))
            }
        }
    }
}

/// A failure of one request or of its body.
#[derive(Debug)]
pub(crate) struct HttpError {
    timeout: bool,
    /// No connection was made (or no request could be built): the server
    /// cannot have seen it.
    nothing_sent: bool,
    /// The request cannot be sent at all (its URL is no HTTP request
    /// target): retrying cannot help.
    invalid_request: bool,
    source: BoxError,
}

impl HttpError {
    fn new(source: impl Into<BoxError>) -> Self {
        HttpError {
            timeout: false,
            nothing_sent: false,
            invalid_request: false,
            source: source.into(),
        }
    }

    fn not_sent(source: impl Into<BoxError>) -> Self {
        HttpError {
            nothing_sent: true,
            ..HttpError::new(source)
        }
    }

    fn invalid(source: impl Into<BoxError>) -> Self {
        HttpError {
            invalid_request: true,
            ..HttpError::not_sent(source)
        }
    }

    fn timeout() -> Self {
        HttpError {
            timeout: true,
            ..HttpError::new("operation timed out")
        }
    }

    fn from_reqwest(err: reqwest::Error) -> Self {
        HttpError {
            timeout: err.is_timeout(),
            nothing_sent: err.is_connect() || err.is_builder(),
            invalid_request: err.is_builder(),
            // The URL may carry credentials or tokens in its query.
            source: err.without_url().into(),
        }
    }

    fn from_hyper(err: hyper_util::client::legacy::Error) -> Self {
        if err.is_connect() {
            HttpError::not_sent(err)
        } else {
            HttpError::new(err)
        }
    }

    /// A timeout fired.
    pub(crate) fn is_timeout(&self) -> bool {
        self.timeout
    }

    /// Nothing reached the server: no connection, or no request to send.
    pub(crate) fn nothing_sent(&self) -> bool {
        self.nothing_sent
    }

    /// The request could never be sent as it is.
    pub(crate) fn is_invalid_request(&self) -> bool {
        self.invalid_request
    }

    /// The underlying error, for [`crate::Error::with_source`].
    pub(crate) fn into_source(self) -> BoxError {
        self.source
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

#[path = "http_events.rs"]
mod events;

pub(crate) use events::fuzz_entry as events_fuzz_entry;

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
