//! The shared [`Client`]: connection pool, default headers, timeouts and retry policy.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::error::{Error, ErrorKind, Result};
use crate::http::{DirectSettings, HttpEngine};
use crate::retry::RetryPolicy;
use crate::transport::{RedactedHeaders, RedirectPolicy, Transport, is_secret_header};

/// The path prefix of streams on the reference servers.
const STREAM_PREFIX: &str = "/v1/stream";
/// Smallest `sse_read_buffer`: below it, reads would be mostly overhead.
const MIN_SSE_READ_BUFFER: usize = 1024;

fn is_http_url(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Default limit for any response body the client buffers (64 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// A shared HTTP client for Durable Streams: one connection pool, default
/// headers, timeouts and a retry policy. Cheap to clone (it is an `Arc`);
/// make one per process and derive [`Stream`](crate::Stream) handles from it.
///
/// ```
/// use durable_streams_client::Client;
/// let client = Client::new();
/// let stream = client.stream("http://127.0.0.1:4437/v1/stream/orders").unwrap();
/// assert_eq!(stream.url().path(), "/v1/stream/orders");
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    pub(crate) transport: Transport,
}

impl Client {
    /// A client with default settings. Never panics: if the platform's HTTP
    /// stack cannot be initialised, each operation returns that error instead.
    pub fn new() -> Client {
        match ClientBuilder::default().build() {
            Ok(client) => client,
            Err(err) => {
                let settings = ClientBuilder::default();
                Client {
                    inner: Arc::new(ClientInner {
                        transport: settings.transport(Err(err.to_string())),
                    }),
                }
            }
        }
    }

    /// Start configuring a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The URL of stream `name` on the server at `base_url`:
    /// `{base_url}/v1/stream/{name}`, the layout of the reference servers.
    /// A base that already ends in `/v1/stream` is not doubled, and a `name`
    /// that is itself an `http(s)://` URL is returned as is (the protocol
    /// lets a server put streams at any path; use [`Client::stream`] for
    /// other layouts). No I/O happens here.
    pub fn stream_url(base_url: &str, name: &str) -> Result<String> {
        let name = name.trim();
        if is_http_url(name) {
            return Ok(name.to_owned());
        }
        let name = name.trim_start_matches('/');
        if name.is_empty() {
            return Err(Error::invalid_argument("name", "the stream name is empty"));
        }
        let base = base_url.trim().trim_end_matches('/');
        if !is_http_url(base) {
            return Err(Error::invalid_argument(
                "base_url",
                "the server URL must start with http:// or https://",
            ));
        }
        if base.ends_with(STREAM_PREFIX) {
            Ok(format!("{base}/{name}"))
        } else {
            Ok(format!("{base}{STREAM_PREFIX}/{name}"))
        }
    }

    /// The retry policy used for requests and live-read reconnects.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.transport.retry
    }

    /// The configured limit for buffered response bodies.
    pub fn max_response_bytes(&self) -> usize {
        self.inner.transport.max_response_bytes
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.inner.transport
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.inner.transport;
        f.debug_struct("Client")
            .field("default_headers", &RedactedHeaders(&t.default_headers))
            .field("retry", &t.retry)
            .field("request_timeout", &t.request_timeout)
            .field("live_idle_timeout", &t.live_idle_timeout)
            .field("max_response_bytes", &t.max_response_bytes)
            .field("redirects", &t.redirects)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Client`]. Every setting has a sensible default; `build`
/// validates them and names the offending field on error.
///
/// Plain `http://` requests go straight to hyper's pooled HTTP/1.1 client;
/// TLS, proxies ([`proxy`](Self::proxy) or the environment's), HTTP/2
/// ([`http2_prior_knowledge`](Self::http2_prior_knowledge)), response
/// decompression (the `gzip`, `zstd`, `brotli` features) and a handed-in
/// [`http_client`](Self::http_client) go through reqwest. Both paths send
/// the same headers and obey the same timeouts.
///
/// ```
/// use std::time::Duration;
/// use durable_streams_client::{Client, RetryPolicy};
/// let client = Client::builder()
///     .default_header("x-tenant", "acme")
///     .connect_timeout(Duration::from_secs(3))
///     .request_timeout(Duration::from_secs(10))
///     .retry_policy(RetryPolicy::default().max_retries(3))
///     .build()
///     .unwrap();
/// # drop(client);
/// ```
pub struct ClientBuilder {
    default_headers: HeaderMap,
    header_error: Option<Error>,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
    live_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
    pool_idle_timeout: Option<Duration>,
    sse_read_buffer: Option<usize>,
    http2_prior_knowledge: bool,
    retry: RetryPolicy,
    max_response_bytes: usize,
    redirects: RedirectPolicy,
    tls: TlsConfig,
    proxy: Option<reqwest::Proxy>,
    no_proxy: bool,
    tls_error: Option<Error>,
    http_client: Option<reqwest::Client>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        let mut default_headers = HeaderMap::new();
        default_headers.insert(
            reqwest::header::USER_AGENT,
            HeaderValue::from_static(concat!(
                "durable-streams-client/",
                env!("CARGO_PKG_VERSION")
            )),
        );
        ClientBuilder {
            default_headers,
            header_error: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Some(Duration::from_secs(30)),
            // Servers close SSE connections about every 60 s and long-polls
            // after their own timeout; stay above both.
            live_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 32,
            pool_idle_timeout: Some(Duration::from_secs(90)),
            sse_read_buffer: None,
            http2_prior_knowledge: false,
            retry: RetryPolicy::default(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            redirects: RedirectPolicy::default(),
            tls: TlsConfig::default(),
            proxy: None,
            no_proxy: false,
            tls_error: None,
            http_client: None,
        }
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("default_headers", &RedactedHeaders(&self.default_headers))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("live_idle_timeout", &self.live_idle_timeout)
            .field("sse_read_buffer", &self.sse_read_buffer)
            .field("retry", &self.retry)
            .field("redirects", &self.redirects)
            .field("root_certificates", &self.tls.root_count())
            .field("identity", &self.tls.has_identity().then_some("<redacted>"))
            .field("proxy", &self.proxy.as_ref().map(|_| "<set>"))
            .field("no_proxy", &self.no_proxy)
            .field(
                "http_client",
                &self.http_client.as_ref().map(|_| "<preconfigured>"),
            )
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Add a header sent on every request (e.g. a static `authorization`).
    /// Secret-looking headers are marked sensitive and never logged.
    pub fn default_header(mut self, name: &str, value: &str) -> Self {
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| Error::invalid_argument("default_header", format!("{name:?}: {e}")))
            .and_then(|n| {
                HeaderValue::from_str(value).map(|v| (n, v)).map_err(|e| {
                    Error::invalid_argument("default_header", format!("value for {name:?}: {e}"))
                })
            });
        match parsed {
            Ok((n, mut v)) => {
                if is_secret_header(n.as_str()) {
                    v.set_sensitive(true);
                }
                self.default_headers.insert(n, v);
            }
            Err(e) => {
                self.header_error.get_or_insert(e);
            }
        }
        self
    }

    /// Replace the `user-agent` (default `durable-streams-client/<version>`).
    pub fn user_agent(self, agent: &str) -> Self {
        self.default_header("user-agent", agent)
    }

    /// Time allowed to establish a connection (default 10 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Total time for one non-live request, body included (default 30 s).
    /// Live SSE and long-poll reads are not cut by it; see [`ClientBuilder::live_idle_timeout`].
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = Some(d);
        self
    }

    /// No total timeout for non-live requests.
    pub fn no_request_timeout(mut self) -> Self {
        self.request_timeout = None;
        self
    }

    /// How long a connection may stay silent before it is considered dead
    /// (default 90 s). Applies to every read from the socket, so it must exceed
    /// the server's long-poll timeout; live reads reconnect when it fires.
    pub fn live_idle_timeout(mut self, d: Duration) -> Self {
        self.live_idle_timeout = d;
        self
    }

    /// Idle connections kept per host (default 32).
    pub fn pool_max_idle_per_host(mut self, n: usize) -> Self {
        self.pool_max_idle_per_host = n;
        self
    }

    /// How long an idle pooled connection is kept (default 90 s).
    pub fn pool_idle_timeout(mut self, d: Duration) -> Self {
        self.pool_idle_timeout = Some(d);
        self
    }

    /// Read SSE responses in pieces of at most `bytes` (at least 1,024;
    /// default and most 64 KiB).
    ///
    /// Over plain `http://` (no proxy, no HTTP/2), every SSE read has an
    /// HTTP/1.1 connection of its own that the reading task reads itself,
    /// through a per-thread scratch buffer: an idle SSE read holds no read
    /// buffer whatever this is set to, and a piece handed up is sized to
    /// what arrived. This caps how much one socket read takes, so smaller
    /// means more, smaller pieces for large events. TLS, proxies and
    /// HTTP/2 keep their own buffers. For many readers of one stream,
    /// [`ReadBuilder::shared`](crate::ReadBuilder::shared) saves far more.
    pub fn sse_read_buffer(mut self, bytes: usize) -> Self {
        self.sse_read_buffer = Some(bytes);
        self
    }

    /// Speak HTTP/2 without negotiation (cleartext h2c servers). Over TLS,
    /// HTTP/2 is used automatically when the server offers it.
    ///
    /// Over HTTP/2 every request of the client shares one connection per
    /// origin, and the server caps its concurrent streams (often 100-200).
    /// Live reads hold their stream, and no second connection is opened
    /// (RFC 9113, 9.1), so live reads beyond the cap wait for a stream. For
    /// more live readers of one stream than that, use
    /// [`ReadBuilder::shared`](crate::ReadBuilder::shared); for more
    /// streams, HTTP/1.1 or several clients.
    pub fn http2_prior_knowledge(mut self, yes: bool) -> Self {
        self.http2_prior_knowledge = yes;
        self
    }

    /// Retry and reconnect policy (default: 5 retries, 100 ms doubling to 30 s, 50 % jitter).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Limit for what the client holds in memory from one response (default
    /// 64 MiB): buffered operation responses, one SSE event, one JSON
    /// message, and `collect_*` results. Catch-up and long-poll reads are
    /// not limited in total: they are delivered in pieces of at most
    /// `min(1 MiB, limit)`. Anything larger fails with `ResponseTooLarge`.
    pub fn max_response_bytes(mut self, n: usize) -> Self {
        self.max_response_bytes = n;
        self
    }

    /// Which redirects reads follow (default: same origin only). Writes
    /// follow only 307/308 to the same origin, re-sending the whole body;
    /// nothing follows a redirect from https to http. A refused redirect is
    /// an [`ErrorKind::Redirect`] error.
    pub fn redirects(mut self, policy: RedirectPolicy) -> Self {
        self.redirects = policy;
        self
    }

    /// Trust extra root certificates (PEM, one or more), e.g. a private CA,
    /// in addition to the platform's roots. May be called more than once.
    /// Without a TLS feature (`rustls` or `native-tls`), `build` fails with
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) `{ feature: "tls" }`.
    pub fn add_root_certificate_pem(mut self, pem: &[u8]) -> Self {
        if let Err(e) = self.tls.add_roots(pem) {
            self.tls_error.get_or_insert(e);
        }
        self
    }

    /// Present a client certificate (mutual TLS): the PEM certificate chain
    /// and the PEM private key (PKCS#8, PKCS#1 or SEC1 with rustls; PKCS#8
    /// with `native-tls`).
    /// Without a TLS feature, `build` fails as for
    /// [`add_root_certificate_pem`](Self::add_root_certificate_pem).
    pub fn client_certificate_pem(mut self, cert_chain: &[u8], private_key: &[u8]) -> Self {
        if let Err(e) = self.tls.set_identity(cert_chain, private_key) {
            self.tls_error.get_or_insert(e);
        }
        self
    }

    /// Send every request through this proxy (`http://`, `https://` or
    /// `socks5://` URL; credentials may be in the URL). Without it the
    /// standard environment variables are honoured: `HTTP_PROXY`,
    /// `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` (lower case too).
    pub fn proxy(mut self, url: &str) -> Self {
        match reqwest::Proxy::all(url) {
            Ok(proxy) => self.proxy = Some(proxy),
            Err(e) => {
                self.tls_error.get_or_insert(
                    Error::invalid_argument("proxy", "not a proxy URL")
                        .with_source(e.without_url()),
                );
            }
        }
        self
    }

    /// Use no proxy, not even one from the environment.
    pub fn no_proxy(mut self) -> Self {
        self.no_proxy = true;
        self
    }

    /// Escape hatch: use this preconfigured `reqwest` client (TLS, proxies,
    /// DNS, ...) instead of building one. Connection, TLS, proxy and timeout
    /// settings of this builder are then not applied (request timeouts,
    /// headers, retries, redirects and limits still are). Build it with
    /// `redirect(reqwest::redirect::Policy::none())`: a client that follows
    /// redirects itself is detected and its answers refused, since it may
    /// turn a write into a GET.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    fn transport(&self, http: std::result::Result<HttpEngine, String>) -> Transport {
        Transport {
            http,
            default_headers: self.default_headers.clone(),
            retry: self.retry.clone(),
            request_timeout: self.request_timeout,
            live_idle_timeout: self.live_idle_timeout,
            max_response_bytes: self.max_response_bytes,
            redirects: self.redirects,
        }
    }

    /// Validate the settings and build the client.
    pub fn build(mut self) -> Result<Client> {
        if let Some(e) = self.header_error.take() {
            return Err(e);
        }
        if let Some(e) = self.tls_error.take() {
            return Err(e);
        }
        self.retry.validate()?;
        if self.connect_timeout.is_zero() {
            return Err(Error::invalid_argument(
                "connect_timeout",
                "must be greater than zero",
            ));
        }
        if self.request_timeout.is_some_and(|d| d.is_zero()) {
            return Err(Error::invalid_argument(
                "request_timeout",
                "must be greater than zero",
            ));
        }
        if self.live_idle_timeout.is_zero() {
            return Err(Error::invalid_argument(
                "live_idle_timeout",
                "must be greater than zero",
            ));
        }
        if self.max_response_bytes == 0 {
            return Err(Error::invalid_argument(
                "max_response_bytes",
                "must be greater than zero",
            ));
        }
        if self
            .sse_read_buffer
            .is_some_and(|n| n < MIN_SSE_READ_BUFFER)
        {
            return Err(Error::invalid_argument(
                "sse_read_buffer",
                format!("must be at least {MIN_SSE_READ_BUFFER} bytes"),
            ));
        }
        let http = match self.http_client.take() {
            Some(http) => HttpEngine::new(http, None, true),
            None => {
                let direct = self.direct_settings();
                HttpEngine::new(self.build_http()?, direct, false)
            }
        };
        Ok(Client {
            inner: Arc::new(ClientInner {
                transport: self.transport(Ok(http)),
            }),
        })
    }

    /// Plain-HTTP requests skip reqwest (see `http.rs`) unless they need
    /// something only reqwest does: a proxy (set here or in the
    /// environment), HTTP/2, or response decompression.
    fn direct_settings(&self) -> Option<DirectSettings> {
        let decompression = cfg!(any(feature = "gzip", feature = "zstd", feature = "brotli"));
        let env_proxy = || {
            ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
                .iter()
                .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
        };
        let proxied = !self.no_proxy && (self.proxy.is_some() || env_proxy());
        (!decompression && !proxied && !self.http2_prior_knowledge).then_some(DirectSettings {
            connect_timeout: self.connect_timeout,
            idle_timeout: self.live_idle_timeout,
            pool_max_idle_per_host: self.pool_max_idle_per_host,
            pool_idle_timeout: self.pool_idle_timeout,
            sse_read_buffer: self.sse_read_buffer,
        })
    }

    fn build_http(&mut self) -> Result<reqwest::Client> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.live_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .pool_idle_timeout(self.pool_idle_timeout)
            .tcp_nodelay(true)
            // The transport decides per request which redirects to follow.
            .redirect(reqwest::redirect::Policy::none());
        if self.http2_prior_knowledge {
            http = http.http2_prior_knowledge();
        }
        http = self.tls.apply(http);
        if self.no_proxy {
            http = http.no_proxy();
        } else if let Some(proxy) = self.proxy.take() {
            http = http.proxy(proxy);
        }
        http.build().map_err(|e| {
            Error::new(ErrorKind::Network)
                .with_message("could not build the HTTP client")
                .with_source(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_urls_follow_the_reference_layout() {
        let url = |b, n| Client::stream_url(b, n).unwrap();
        assert_eq!(url("http://h:1", "orders"), "http://h:1/v1/stream/orders");
        assert_eq!(url("http://h:1/", "/a/b"), "http://h:1/v1/stream/a/b");
        assert_eq!(url("http://h:1/v1/stream/", "x"), "http://h:1/v1/stream/x");
        assert_eq!(url("https://p/prefix", "x"), "https://p/prefix/v1/stream/x");
        assert_eq!(url("http://h:1", "https://o/s"), "https://o/s");
        assert!(Client::stream_url("http://h:1", "/").is_err());
        assert!(Client::stream_url("127.0.0.1:4437", "x").is_err());
        let stream = Client::new().stream_at("http://h:1", "x").unwrap();
        assert_eq!(stream.url().path(), "/v1/stream/x");
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let err = Client::builder()
            .retry_policy(
                RetryPolicy::default()
                    .initial_delay(Duration::from_secs(2))
                    .max_delay(Duration::from_secs(1)),
            )
            .build()
            .unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::InvalidArgument { field: "max_delay" }
        );
        let err = Client::builder()
            .default_header("bad name", "x")
            .build()
            .unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::InvalidArgument {
                field: "default_header"
            }
        );
        let err = Client::builder().max_response_bytes(0).build().unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::InvalidArgument {
                field: "max_response_bytes"
            }
        );
        let err = Client::builder()
            .connect_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::InvalidArgument {
                field: "connect_timeout"
            }
        );
        let err = Client::builder().sse_read_buffer(512).build().unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::InvalidArgument {
                field: "sse_read_buffer"
            }
        );
        Client::builder().sse_read_buffer(1024).build().unwrap();
    }

    #[test]
    fn debug_redacts_secrets() {
        let client = Client::builder()
            .default_header("authorization", "Bearer hunter2")
            .default_header("x-api-token", "t0ps3cret")
            .default_header("x-tenant", "acme")
            .build()
            .unwrap();
        let shown = format!("{client:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("t0ps3cret"),
            "{shown}"
        );
        assert!(shown.contains("acme"), "{shown}");
    }

    #[test]
    fn rejects_non_http_urls() {
        let client = Client::new();
        assert!(client.stream("ftp://x/y").is_err());
        assert!(client.stream("not a url").is_err());
        assert!(client.stream("https://x/y").is_ok());
    }

    #[test]
    fn handles_are_send_sync_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<Client>();
        assert_traits::<crate::Stream>();
    }
}

/// Extra roots and a client identity, kept only when a TLS feature is on.
#[cfg(any(feature = "rustls", feature = "native-tls"))]
#[derive(Default)]
struct TlsConfig {
    roots: Vec<reqwest::Certificate>,
    identity: Option<reqwest::Identity>,
}

#[cfg(any(feature = "rustls", feature = "native-tls"))]
impl TlsConfig {
    fn add_roots(&mut self, pem: &[u8]) -> Result<()> {
        match reqwest::Certificate::from_pem_bundle(pem) {
            Ok(certs) if !certs.is_empty() => {
                self.roots.extend(certs);
                Ok(())
            }
            Ok(_) => Err(Error::invalid_argument(
                "root_certificate",
                "no PEM certificate found",
            )),
            Err(e) => Err(
                Error::invalid_argument("root_certificate", "not a PEM certificate").with_source(e),
            ),
        }
    }

    fn set_identity(&mut self, cert_chain: &[u8], private_key: &[u8]) -> Result<()> {
        #[cfg(feature = "rustls")]
        let identity = {
            let mut pem = cert_chain.to_vec();
            pem.push(b'\n');
            pem.extend_from_slice(private_key);
            reqwest::Identity::from_pem(&pem)
        };
        #[cfg(all(feature = "native-tls", not(feature = "rustls")))]
        let identity = reqwest::Identity::from_pkcs8_pem(cert_chain, private_key);
        let identity = identity.map_err(|e| {
            Error::invalid_argument(
                "client_certificate",
                "not a PEM certificate chain and private key",
            )
            .with_source(e)
        })?;
        self.identity = Some(identity);
        Ok(())
    }

    fn apply(&mut self, mut http: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        for cert in self.roots.drain(..) {
            http = http.add_root_certificate(cert);
        }
        if let Some(identity) = self.identity.take() {
            http = http.identity(identity);
        }
        http
    }

    fn root_count(&self) -> usize {
        self.roots.len()
    }

    fn has_identity(&self) -> bool {
        self.identity.is_some()
    }
}

/// Built without TLS (`default-features = false`, neither `rustls` nor
/// `native-tls`): plain-HTTP servers only; asking for certificates fails.
#[cfg(not(any(feature = "rustls", feature = "native-tls")))]
#[derive(Default)]
struct TlsConfig {}

#[cfg(not(any(feature = "rustls", feature = "native-tls")))]
impl TlsConfig {
    fn no_tls() -> Error {
        Error::new(ErrorKind::Unsupported { feature: "tls" })
            .with_message("built without a TLS feature (enable `rustls` or `native-tls`)")
    }

    fn add_roots(&mut self, _pem: &[u8]) -> Result<()> {
        Err(Self::no_tls())
    }

    fn set_identity(&mut self, _cert_chain: &[u8], _private_key: &[u8]) -> Result<()> {
        Err(Self::no_tls())
    }

    fn apply(&mut self, http: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        http
    }

    fn root_count(&self) -> usize {
        0
    }

    fn has_identity(&self) -> bool {
        false
    }
}
