//! The raw baseline: a minimal hyper HTTP/1 client making the same HTTP
//! requests as the library, with no retries, no header handling beyond the
//! protocol's, and no decoding except where the scenario requires it.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc::UnboundedSender;

/// The baseline client (connection pool, no connection limit).
pub type Raw = HyperClient<HttpConnector, Full<Bytes>>;

/// A new baseline client with `TCP_NODELAY` (as reqwest sets it).
pub fn client() -> Raw {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    HyperClient::builder(TokioExecutor::new()).build(connector)
}

/// A response: status, headers and the whole body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn build(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(body))
        .map_err(|e| format!("baseline request {url}: {e}"))
}

/// Send a request and read the whole response.
pub async fn send(
    raw: &Raw,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Response, String> {
    let what = format!("baseline {method} {url}");
    let response = raw
        .request(build(method, url, headers, body)?)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("{what}: body: {e}"))?
        .to_bytes();
    Ok(Response {
        status,
        headers: parts.headers,
        body,
    })
}

/// Like [`send`], but a non-2xx status is an error.
pub async fn send_ok(
    raw: &Raw,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Response, String> {
    let r = send(raw, method.clone(), url, headers, body).await?;
    if !(200..300).contains(&r.status) {
        return Err(format!("baseline {method} {url} answered {}", r.status));
    }
    Ok(r)
}

/// The tail offset (HEAD).
pub async fn tail(raw: &Raw, url: &str) -> Result<String, String> {
    let r = send_ok(raw, Method::HEAD, url, &[], Bytes::new()).await?;
    r.header("stream-next-offset")
        .map(str::to_owned)
        .ok_or_else(|| format!("baseline HEAD {url}: no stream-next-offset"))
}

/// Catch-up read of the whole stream from the start: one GET per response
/// until the server says the reader is up to date. Each body goes to `each`.
pub async fn read_all(
    raw: &Raw,
    url: &str,
    mut each: impl FnMut(&Bytes) -> Result<(), String>,
) -> Result<(), String> {
    let mut offset = "-1".to_owned();
    loop {
        let r = send_ok(
            raw,
            Method::GET,
            &format!("{url}?offset={offset}"),
            &[],
            Bytes::new(),
        )
        .await?;
        if !r.body.is_empty() {
            each(&r.body)?;
        }
        let next = r
            .header("stream-next-offset")
            .ok_or_else(|| format!("baseline GET {url}: no stream-next-offset"))?;
        let done = r.header("stream-up-to-date").is_some() || next == offset;
        offset = next.to_owned();
        if done || r.body.is_empty() {
            return Ok(());
        }
    }
}

/// A long-poll reader from `offset`: every response with data sends the
/// time it arrived. Ends on an error or when `tx` is closed.
pub async fn long_poll_reader(
    raw: Raw,
    url: String,
    mut offset: String,
    tx: UnboundedSender<Instant>,
) {
    let mut cursor: Option<String> = None;
    loop {
        let mut target = format!("{url}?offset={offset}&live=long-poll");
        if let Some(c) = &cursor {
            target.push_str("&cursor=");
            target.push_str(c);
        }
        let Ok(r) = send(&raw, Method::GET, &target, &[], Bytes::new()).await else {
            return;
        };
        if !matches!(r.status, 200 | 204) {
            return;
        }
        if r.status == 200 && !r.body.is_empty() && tx.send(Instant::now()).is_err() {
            return;
        }
        if let Some(next) = r.header("stream-next-offset") {
            offset = next.to_owned();
        }
        if let Some(c) = r.header("stream-cursor") {
            cursor = Some(c.to_owned());
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// An SSE reader from `offset`: every `data` event sends the time it
/// arrived (with `id`). One connection, bytes scanned for event boundaries.
pub async fn sse_reader(
    raw: Raw,
    url: String,
    offset: String,
    id: usize,
    tx: UnboundedSender<(usize, Instant)>,
) {
    let target = format!("{url}?offset={offset}&live=sse");
    let Ok(req) = build(Method::GET, &target, &[], Bytes::new()) else {
        return;
    };
    let Ok(response) = raw.request(req).await else {
        return;
    };
    if response.status() != 200 {
        return;
    }
    let mut body = response.into_body();
    let mut buf = BytesMut::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(end) = find(&buf, b"\n\n") {
            let event = buf.split_to(end + 2);
            if is_data_event(&event) && tx.send((id, Instant::now())).is_err() {
                return;
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether an SSE event block is `event: data` (or has no event name).
pub fn is_data_event(block: &[u8]) -> bool {
    let mut name: Option<&[u8]> = None;
    let mut has_data = false;
    for line in block.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(v) = line.strip_prefix(b"event:") {
            name = Some(v.strip_prefix(b" ").unwrap_or(v));
        } else if line.starts_with(b"data:") {
            has_data = true;
        }
    }
    has_data && name.is_none_or(|n| n == b"data" || n == b"message")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_event_detection() {
        assert!(is_data_event(b"event: data\ndata: hi\n\n"));
        assert!(is_data_event(b"data: hi\n\n"));
        assert!(!is_data_event(b"event: control\ndata: {}\n\n"));
        assert!(!is_data_event(b": keep-alive\n\n"));
        assert_eq!(find(b"ab\n\ncd", b"\n\n"), Some(2));
    }
}
