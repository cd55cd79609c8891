//! A cleartext HTTP/2 (h2c, prior knowledge) front for the fan-out
//! benchmark's `h2` variant: neither reference server speaks HTTP/2
//! (h2c prior knowledge is refused, an `Upgrade: h2c` is ignored), so this
//! front multiplexes a client's requests over one connection and forwards
//! each to the server over HTTP/1.1, streaming the answer (SSE included).
//! It runs in the parent bench process, so the measured child holds only
//! the client side.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinHandle;

type Upstream = HyperClient<HttpConnector, Incoming>;

/// A running front: its origin, and the task that accepts connections
/// (aborted on drop; connections end with it).
pub struct H2Front {
    /// `http://127.0.0.1:PORT`.
    pub origin: String,
    accept: JoinHandle<()>,
}

impl Drop for H2Front {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Start a front on a free loopback port that forwards to `upstream`
/// (`http://host:port`).
pub async fn start(upstream: &str) -> Result<H2Front, String> {
    let upstream = upstream.trim_end_matches('/').to_owned();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| format!("h2c front: bind: {e}"))?;
    let origin = format!(
        "http://{}",
        listener
            .local_addr()
            .map_err(|e| format!("h2c front: {e}"))?
    );
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = HyperClient::builder(TokioExecutor::new()).build(connector);
    let accept = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let client = client.clone();
            let upstream = upstream.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    forward(client.clone(), upstream.clone(), req)
                });
                let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                // Every subscriber is one stream of the same connection.
                builder.max_concurrent_streams(u32::MAX);
                let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    Ok(H2Front { origin, accept })
}

async fn forward(
    client: Upstream,
    upstream: String,
    mut req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, hyper::Error>>, Infallible> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{upstream}{path}").parse() else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    *req.uri_mut() = uri;
    *req.version_mut() = hyper::Version::HTTP_11;
    // The server sees its own authority (hyper sets it from the URI).
    req.headers_mut().remove(hyper::header::HOST);
    Ok(match client.request(req).await {
        Ok(resp) => resp.map(BodyExt::boxed),
        Err(_) => status(StatusCode::BAD_GATEWAY),
    })
}

fn status(code: StatusCode) -> Response<BoxBody<Bytes, hyper::Error>> {
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *resp.status_mut() = code;
    resp
}
