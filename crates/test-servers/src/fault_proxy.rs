//! A fault-injecting reverse proxy for chaos tests. It accepts HTTP/1.1
//! and cleartext HTTP/2 (h2c with prior knowledge) on the same port and
//! forwards over HTTP/1.1, so it is also the HTTP/2 front of servers that
//! speak only HTTP/1.1.
//!
//! [`FaultProxy`] listens on `127.0.0.1:0` and forwards every request to a
//! **real** upstream server (a [`TestServer`](crate::TestServer)), streaming
//! request and response bodies (SSE included) without buffering them, except
//! where a fault needs the whole answer. Rules ([`Rule`]) matched by method,
//! path substring and query substring inject a [`Fault`] into matching
//! requests; rules can be added and removed at run time and may be limited
//! to a number of matching requests. Counters record how many requests the
//! proxy saw, per `(method, path)` and in total.
//!
//! The proxy runs on its own thread with its own Tokio runtime, so its API
//! is synchronous and can be used from sync tests and from any async
//! runtime alike. Dropping the proxy stops it and closes all its
//! connections (black-holed ones included).
//!
//! ```
//! use test_servers::fault_proxy::{Fault, FaultProxy, Rule};
//! use test_servers::{http_request, ServerKind, TestServer};
//!
//! let server = TestServer::start(ServerKind::Rust);
//! let proxy = FaultProxy::start(&server);
//! let url = proxy.url_of(&server.unique_stream_url("proxy-doc"));
//! let created = http_request("PUT", &url, &[("content-type", "text/plain")], b"").unwrap();
//! assert_eq!(created.status, 201);
//!
//! // The next POST is applied upstream, but the client sees a 502.
//! proxy.add_rule(Rule::new(Fault::StatusAfterForward(502)).method("POST").times(1));
//! let appended = http_request("POST", &url, &[("content-type", "text/plain")], b"x").unwrap();
//! assert_eq!(appended.status, 502);
//! let read = http_request("GET", &format!("{url}?offset=-1"), &[], b"").unwrap();
//! assert_eq!(read.body, b"x");
//! assert_eq!(proxy.requests("POST", test_servers::url_path(&url)), 1);
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{Notify, oneshot};

use crate::TestServer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// How long a cut connection waits after the last passed bytes before it is
/// closed, so that they are flushed to the client first.
const CUT_FLUSH_DELAY: Duration = Duration::from_millis(50);

/// Maps a response header's value (`None` when absent) to its new value
/// (`None` removes it). See [`Fault::MapHeader`].
pub type HeaderMapFn = Arc<dyn Fn(Option<&str>) -> Option<String> + Send + Sync>;

/// What the proxy does to a request matched by a [`Rule`].
#[derive(Clone)]
pub enum Fault {
    /// Answer `status` (301, 302, 303, 307, 308) with `Location: location`
    /// without forwarding. `location` is sent verbatim: a path on the proxy
    /// (`/v1/stream/other`), or an absolute URL, e.g. the upstream server
    /// itself (a different origin).
    Redirect {
        /// The redirect status code.
        status: u16,
        /// The `Location` header value.
        location: String,
    },
    /// Forward the request (so a write **is** applied upstream), read and
    /// discard the real answer, and answer `status` (e.g. 502, 504) with an
    /// empty body instead.
    StatusAfterForward(u16),
    /// Answer `status` with these headers and an empty body without
    /// forwarding, e.g. `503` with `Retry-After`, or `401`.
    Status(u16, Vec<(String, String)>),
    /// A misbehaving cache: the first matching request is forwarded and its
    /// answer (status, headers, body; read whole) is remembered; every later
    /// request matching the same rule gets that answer replayed without
    /// forwarding. Not for SSE (an SSE answer never ends).
    StaleReplay,
    /// For an SSE answer (`Content-Type: text/event-stream`), pass bytes
    /// through until the first `event: control` event is complete (its
    /// terminating blank line included), then close the connection abruptly
    /// (no terminating chunk). Other answers are passed through untouched.
    CutSseAfterFirstControl,
    /// Forward, then set response header `name` to `value` (added if
    /// absent), e.g. a `Stream-Next-Offset` that goes backwards.
    RewriteHeader {
        /// Header name (case-insensitive).
        name: String,
        /// The new value.
        value: String,
    },
    /// Forward, then set response header `name` to whatever `map` returns
    /// for its current value (`None` removes it).
    MapHeader {
        /// Header name (case-insensitive).
        name: String,
        /// The mapping.
        map: HeaderMapFn,
    },
    /// Forward, then remove response header `name`, e.g.
    /// `Stream-Next-Offset` or `Stream-Cursor`.
    StripHeader(String),
    /// Accept the request and never answer; the connection stays open until
    /// the client gives up or the proxy is dropped. Not forwarded.
    BlackHole,
    /// Forward (so a write **is** applied upstream; the real answer is read
    /// whole), then close the connection without answering.
    DropAfterForward,
}

impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Redirect { status, location } => f
                .debug_struct("Redirect")
                .field("status", status)
                .field("location", location)
                .finish(),
            Fault::StatusAfterForward(s) => f.debug_tuple("StatusAfterForward").field(s).finish(),
            Fault::Status(s, h) => f.debug_tuple("Status").field(s).field(h).finish(),
            Fault::StaleReplay => f.write_str("StaleReplay"),
            Fault::CutSseAfterFirstControl => f.write_str("CutSseAfterFirstControl"),
            Fault::RewriteHeader { name, value } => f
                .debug_struct("RewriteHeader")
                .field("name", name)
                .field("value", value)
                .finish(),
            Fault::MapHeader { name, .. } => f
                .debug_struct("MapHeader")
                .field("name", name)
                .finish_non_exhaustive(),
            Fault::StripHeader(n) => f.debug_tuple("StripHeader").field(n).finish(),
            Fault::BlackHole => f.write_str("BlackHole"),
            Fault::DropAfterForward => f.write_str("DropAfterForward"),
        }
    }
}

/// A fault plus the requests it applies to. All given conditions must hold;
/// a rule without conditions matches every request. Build with
/// [`Rule::new`] and the chained setters.
#[derive(Debug, Clone)]
pub struct Rule {
    fault: Fault,
    method: Option<String>,
    path_contains: Option<String>,
    query_contains: Option<String>,
    times: Option<u64>,
}

impl Rule {
    /// A rule applying `fault` to every request, without limit.
    pub fn new(fault: Fault) -> Rule {
        Rule {
            fault,
            method: None,
            path_contains: None,
            query_contains: None,
            times: None,
        }
    }

    /// Only requests with this method (case-insensitive), e.g. `"POST"`.
    pub fn method(mut self, method: &str) -> Rule {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Only requests whose URL path (without query) contains `s`.
    pub fn path(mut self, s: &str) -> Rule {
        self.path_contains = Some(s.to_owned());
        self
    }

    /// Only requests whose raw query string (without `?`, as sent) contains
    /// `s`, e.g. `"live=sse"`.
    pub fn query(mut self, s: &str) -> Rule {
        self.query_contains = Some(s.to_owned());
        self
    }

    /// Apply to at most `n` matching requests; later ones pass through (or
    /// match later rules).
    pub fn times(mut self, n: u64) -> Rule {
        self.times = Some(n);
        self
    }

    fn matches(&self, method: &str, path: &str, query: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
            && self
                .query_contains
                .as_deref()
                .is_none_or(|q| query.contains(q))
    }
}

/// Identifies a rule added with [`FaultProxy::add_rule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(u64);

#[derive(Debug, Clone)]
struct Cached {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Debug)]
struct RuleEntry {
    id: RuleId,
    rule: Rule,
    hits: u64,
    cache: Arc<Mutex<Option<Cached>>>,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<RuleEntry>,
    total: u64,
    per_path: HashMap<(String, String), u64>,
    log: Vec<String>,
    http2: u64,
}

#[derive(Debug)]
struct Shared {
    upstream: Mutex<SocketAddr>,
    state: Mutex<State>,
    next_rule: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fault-injecting reverse proxy in front of one upstream
/// server. See the [module docs](self).
#[derive(Debug)]
pub struct FaultProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    base_url: String,
    shutdown: Option<oneshot::Sender<()>>,
}

impl FaultProxy {
    /// Starts a proxy in front of `server`.
    ///
    /// # Panics
    ///
    /// If the proxy cannot bind a local port or start its thread.
    pub fn start(server: &TestServer) -> FaultProxy {
        FaultProxy::start_for(server.addr())
    }

    /// Starts a proxy in front of the HTTP server at `upstream`.
    ///
    /// # Panics
    ///
    /// If the proxy cannot bind a local port or start its thread.
    pub fn start_for(upstream: SocketAddr) -> FaultProxy {
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            state: Mutex::new(State::default()),
            next_rule: AtomicU64::new(1),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("fault proxy: bind");
        listener
            .set_nonblocking(true)
            .expect("fault proxy: set_nonblocking");
        let addr = listener.local_addr().expect("fault proxy: local_addr");
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fault proxy: runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("fault proxy: listener");
                    tokio::select! {
                        _ = shutdown_rx => {}
                        () = accept_loop(listener, thread_shared) => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("fault proxy: spawn thread");
        FaultProxy {
            shared,
            addr,
            base_url: format!("http://{addr}"),
            shutdown: Some(shutdown_tx),
        }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's base URL without trailing slash, e.g.
    /// `"http://127.0.0.1:40123"`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The upstream server's base URL, e.g. for a cross-origin
    /// [`Fault::Redirect`].
    pub fn upstream_base_url(&self) -> String {
        format!("http://{}", self.upstream())
    }

    /// The upstream server's address.
    pub fn upstream(&self) -> SocketAddr {
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Forwards all later requests to `upstream` instead, e.g. to a server
    /// restarted on another port. Connections already forwarding stay as
    /// they are.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = upstream;
    }

    /// `url` on the proxy: an upstream URL (e.g. from
    /// [`TestServer::unique_stream_url`]) with its origin replaced by the
    /// proxy's; a path (`/v1/stream/x`) is prefixed with the proxy's base.
    pub fn url_of(&self, url: &str) -> String {
        if let Some(rest) = url.strip_prefix(&self.upstream_base_url()) {
            format!("{}{rest}", self.base_url)
        } else if url.starts_with('/') {
            format!("{}{url}", self.base_url)
        } else {
            let path_and_query = url
                .strip_prefix("http://")
                .and_then(|r| r.find('/').map(|i| &r[i..]))
                .unwrap_or("/");
            format!("{}{path_and_query}", self.base_url)
        }
    }

    /// Adds a rule after the existing ones. For each request, the first
    /// rule that matches (and is not used up) applies.
    pub fn add_rule(&self, rule: Rule) -> RuleId {
        let id = RuleId(self.shared.next_rule.fetch_add(1, Ordering::Relaxed));
        self.shared.lock().rules.push(RuleEntry {
            id,
            rule,
            hits: 0,
            cache: Arc::new(Mutex::new(None)),
        });
        id
    }

    /// Removes a rule; `false` if it was not there.
    pub fn remove_rule(&self, id: RuleId) -> bool {
        let mut state = self.shared.lock();
        let before = state.rules.len();
        state.rules.retain(|r| r.id != id);
        state.rules.len() != before
    }

    /// Removes all rules: everything passes through again.
    pub fn clear_rules(&self) {
        self.shared.lock().rules.clear();
    }

    /// How many requests rule `id` was applied to (0 if unknown).
    pub fn rule_hits(&self, id: RuleId) -> u64 {
        self.shared
            .lock()
            .rules
            .iter()
            .find(|r| r.id == id)
            .map_or(0, |r| r.hits)
    }

    /// Requests seen with `method` (case-insensitive) on exactly `path`
    /// (without query), faulted or not.
    pub fn requests(&self, method: &str, path: &str) -> u64 {
        let key = (method.to_ascii_uppercase(), path.to_owned());
        self.shared.lock().per_path.get(&key).copied().unwrap_or(0)
    }

    /// Requests seen with `method` on any path.
    pub fn requests_with_method(&self, method: &str) -> u64 {
        let method = method.to_ascii_uppercase();
        self.shared
            .lock()
            .per_path
            .iter()
            .filter(|((m, _), _)| *m == method)
            .map(|(_, n)| n)
            .sum()
    }

    /// All requests seen.
    pub fn total_requests(&self) -> u64 {
        self.shared.lock().total
    }

    /// Requests that came over HTTP/2.
    pub fn http2_requests(&self) -> u64 {
        self.shared.lock().http2
    }

    /// Every request seen, in order, as `"METHOD /path?query"`.
    pub fn request_log(&self) -> Vec<String> {
        self.shared.lock().log.clone()
    }

    /// Resets all request counters and the request log (not the rules).
    pub fn reset_counters(&self) {
        let mut state = self.shared.lock();
        state.total = 0;
        state.per_path.clear();
        state.log.clear();
        state.http2 = 0;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let connector = {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        c
    };
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let client = client.clone();
        tokio::spawn(async move {
            let kill = Arc::new(Notify::new());
            let svc_kill = Arc::clone(&kill);
            let svc = service_fn(move |req| {
                handle(
                    Arc::clone(&shared),
                    client.clone(),
                    Arc::clone(&svc_kill),
                    req,
                )
            });
            // HTTP/1.1, or HTTP/2 when the client starts with its preface.
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // Any number of streams on one connection (hyper's default is
            // 200; a fan-out benchmark holds thousands of SSE reads).
            builder.http2().max_concurrent_streams(u32::MAX);
            let conn = builder.serve_connection(TokioIo::new(tcp), svc);
            // Dropping the connection future closes the socket at once.
            tokio::select! {
                _ = conn => {}
                () = kill.notified() => {}
            }
        });
    }
}

/// The rule that applies to a request, counting it as used.
fn take_fault(shared: &Shared, method: &str, path: &str, query: &str) -> Option<Applied> {
    let mut state = shared.lock();
    state.total += 1;
    *state
        .per_path
        .entry((method.to_owned(), path.to_owned()))
        .or_insert(0) += 1;
    let line = if query.is_empty() {
        format!("{method} {path}")
    } else {
        format!("{method} {path}?{query}")
    };
    state.log.push(line);
    let entry = state
        .rules
        .iter_mut()
        .find(|r| r.rule.times.is_none_or(|n| r.hits < n) && r.rule.matches(method, path, query))?;
    entry.hits += 1;
    Some(Applied {
        fault: entry.rule.fault.clone(),
        cache: Arc::clone(&entry.cache),
    })
}

struct Applied {
    fault: Fault,
    cache: Arc<Mutex<Option<Cached>>>,
}

async fn handle(
    shared: Arc<Shared>,
    client: Client<HttpConnector, Incoming>,
    kill: Arc<Notify>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    if req.version() == hyper::Version::HTTP_2 {
        shared.lock().http2 += 1;
    }
    let Some(applied) = take_fault(&shared, &method, &path, &query) else {
        return Ok(forward_passthrough(&shared, &client, req).await);
    };
    let resp = match applied.fault {
        Fault::Redirect { status, location } => {
            let mut resp = simple(status);
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(hyper::header::LOCATION, v);
            }
            resp
        }
        Fault::Status(status, headers) => {
            let mut resp = simple(status);
            for (name, value) in headers {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    resp.headers_mut().append(n, v);
                }
            }
            resp
        }
        Fault::StatusAfterForward(status) => match forward_buffered(&shared, &client, req).await {
            Ok(_) => simple(status),
            Err(resp) => resp,
        },
        Fault::StaleReplay => {
            let cached = applied
                .cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match cached {
                Some(c) => cached_response(&c),
                None => match forward_buffered(&shared, &client, req).await {
                    Ok(c) => {
                        *applied.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
                        cached_response(&c)
                    }
                    Err(resp) => resp,
                },
            }
        }
        Fault::CutSseAfterFirstControl => match forward(&shared, &client, req).await {
            Ok(resp) => {
                let is_sse = resp
                    .headers()
                    .get(hyper::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
                if is_sse {
                    let (mut parts, body) = resp.into_parts();
                    parts.headers.remove(hyper::header::CONTENT_LENGTH);
                    Response::from_parts(parts, CutAfterControl::new(body).boxed())
                } else {
                    resp.map(|b| b.map_err(BoxError::from).boxed())
                }
            }
            Err(resp) => resp,
        },
        Fault::RewriteHeader { name, value } => {
            let value = value.clone();
            map_header(&shared, &client, req, &name, move |_| Some(value.clone())).await
        }
        Fault::MapHeader { name, map } => {
            map_header(&shared, &client, req, &name, move |v| map(v)).await
        }
        Fault::StripHeader(name) => map_header(&shared, &client, req, &name, |_| None).await,
        Fault::BlackHole => std::future::pending().await,
        Fault::DropAfterForward => {
            let _ = forward_buffered(&shared, &client, req).await;
            kill.notify_one();
            std::future::pending().await
        }
    };
    Ok(resp)
}

fn simple(status: u16) -> Response<ProxyBody> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    resp
}

fn empty() -> ProxyBody {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed()
}

fn cached_response(c: &Cached) -> Response<ProxyBody> {
    let mut resp = Response::new(Full::new(c.body.clone()).map_err(|e| match e {}).boxed());
    *resp.status_mut() = c.status;
    *resp.headers_mut() = c.headers.clone();
    resp
}

fn upstream_error(e: impl fmt::Display) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("fault proxy: upstream error: {e}")))
            .map_err(|e| match e {})
            .boxed(),
    );
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Forwards `req` upstream; the answer's body is streamed.
async fn forward(
    shared: &Shared,
    client: &Client<HttpConnector, Incoming>,
    req: Request<Incoming>,
) -> Result<Response<Incoming>, Response<ProxyBody>> {
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let upstream = *shared.upstream.lock().unwrap_or_else(|e| e.into_inner());
    parts.uri = match format!("http://{upstream}{path_and_query}").parse() {
        Ok(uri) => uri,
        Err(e) => return Err(upstream_error(e)),
    };
    strip_hop_by_hop(&mut parts.headers);
    // Upstream is HTTP/1.1, whatever the client spoke.
    parts.version = hyper::Version::HTTP_11;
    match client.request(Request::from_parts(parts, body)).await {
        Ok(mut resp) => {
            strip_hop_by_hop(resp.headers_mut());
            Ok(resp)
        }
        Err(e) => Err(upstream_error(e)),
    }
}

async fn forward_passthrough(
    shared: &Shared,
    client: &Client<HttpConnector, Incoming>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    match forward(shared, client, req).await {
        Ok(resp) => resp.map(|b| b.map_err(BoxError::from).boxed()),
        Err(resp) => resp,
    }
}

/// Forwards `req` and reads the whole answer.
async fn forward_buffered(
    shared: &Shared,
    client: &Client<HttpConnector, Incoming>,
    req: Request<Incoming>,
) -> Result<Cached, Response<ProxyBody>> {
    let resp = forward(shared, client, req).await?;
    let (parts, body) = resp.into_parts();
    match body.collect().await {
        Ok(collected) => Ok(Cached {
            status: parts.status,
            headers: parts.headers,
            body: collected.to_bytes(),
        }),
        Err(e) => Err(upstream_error(e)),
    }
}

async fn map_header(
    shared: &Shared,
    client: &Client<HttpConnector, Incoming>,
    req: Request<Incoming>,
    name: &str,
    map: impl Fn(Option<&str>) -> Option<String>,
) -> Response<ProxyBody> {
    let mut resp = forward_passthrough(shared, client, req).await;
    let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
        return resp;
    };
    let current = resp
        .headers()
        .get(&name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match map(current.as_deref()).and_then(|v| HeaderValue::from_str(&v).ok()) {
        Some(v) => {
            resp.headers_mut().insert(name, v);
        }
        None => {
            resp.headers_mut().remove(name);
        }
    }
    resp
}

/// Finds the end of the first complete `event: control` SSE event in a
/// stream fed piecewise. Lines end with `\n`, `\r\n` or `\r`.
#[derive(Debug, Default)]
struct ControlScanner {
    line: Vec<u8>,
    in_control: bool,
    last_cr: bool,
}

impl ControlScanner {
    /// Feeds `chunk`; returns the number of bytes of `chunk` up to and
    /// including the blank line ending the first control event, if it ends
    /// in this chunk.
    fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
        for (i, &b) in chunk.iter().enumerate() {
            if self.last_cr && b == b'\n' {
                // Second half of a CRLF: the line already ended at '\r'.
                self.last_cr = false;
                continue;
            }
            self.last_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                if self.line.is_empty() {
                    if self.in_control {
                        // A blank line ending a control event; include the
                        // '\n' of a CRLF too.
                        let end = if b == b'\r' && chunk.get(i + 1) == Some(&b'\n') {
                            i + 2
                        } else {
                            i + 1
                        };
                        return Some(end);
                    }
                } else {
                    let line = std::mem::take(&mut self.line);
                    if let Some(value) = line.strip_prefix(b"event:") {
                        let value = value.strip_prefix(b" ").unwrap_or(value);
                        self.in_control = value == b"control";
                    }
                }
            } else {
                self.line.push(b);
            }
        }
        None
    }
}

/// A response body that passes bytes until the first control event is
/// complete, then fails (after a short delay so those bytes are flushed),
/// which makes hyper close the connection without ending the body.
struct CutAfterControl {
    inner: Incoming,
    scanner: ControlScanner,
    cut: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl CutAfterControl {
    fn new(inner: Incoming) -> CutAfterControl {
        CutAfterControl {
            inner,
            scanner: ControlScanner::default(),
            cut: None,
        }
    }
}

impl Body for CutAfterControl {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(sleep) = this.cut.as_mut() {
            ready!(sleep.as_mut().poll(cx));
            return Poll::Ready(Some(Err(
                "fault proxy: SSE cut after first control event".into()
            )));
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    if let Some(end) = this.scanner.feed(&data) {
                        data.truncate(end);
                        this.cut = Some(Box::pin(tokio::time::sleep(CUT_FLUSH_DELAY)));
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::ControlScanner;

    #[test]
    fn scanner_finds_end_of_first_control_event() {
        let text = b"event: data\ndata: [1]\n\nevent: control\ndata: {\"a\":1}\n\nevent: data\n";
        let end = ControlScanner::default().feed(text).unwrap();
        assert!(text[..end].ends_with(b"{\"a\":1}\n\n"));
        // Byte by byte, with CRLF.
        let text = b"event: data\r\ndata: x\r\n\r\nevent:control\r\ndata: {}\r\n\r\nmore";
        let mut s = ControlScanner::default();
        let mut fed = 0;
        let mut found = None;
        for (i, b) in text.iter().enumerate() {
            if let Some(e) = s.feed(std::slice::from_ref(b)) {
                found = Some(i + e);
                break;
            }
            fed += 1;
        }
        // The '\n' of the final CRLF arrives after the cut point.
        assert_eq!(found, Some(text.len() - 5), "{fed}");
        assert_eq!(ControlScanner::default().feed(b"event: data\n\n"), None);
    }
}
