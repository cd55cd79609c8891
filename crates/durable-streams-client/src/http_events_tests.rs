//! The SSE connection's framing, against bytes written by hand: a raw
//! listener on 127.0.0.1 that answers one request with a scripted byte
//! sequence, cut into pieces, then closes or holds the connection.

use std::time::Duration;

use futures::StreamExt;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// Serve one connection: read the request head, send it back through the
/// returned channel, write `pieces` with a short pause between them, then
/// close (or hold the connection open with `hold`).
async fn serve_once(
    pieces: Vec<Vec<u8>>,
    hold: bool,
) -> (hyper::Uri, tokio::sync::oneshot::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let _ = tx.send(head);
        for piece in pieces {
            if socket.write_all(&piece).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if hold {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    });
    let uri = format!("http://{addr}/v1/s?offset=-1&live=sse")
        .parse()
        .unwrap();
    (uri, rx)
}

fn connector() -> HttpConnector {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c
}

async fn get(
    pieces: Vec<Vec<u8>>,
    hold: bool,
    read_size: usize,
) -> Result<(http::response::Parts, EventBody, Vec<u8>), HttpError> {
    let (uri, head_rx) = serve_once(pieces, hold).await;
    let mut headers = HeaderMap::new();
    headers.insert("accept", HeaderValue::from_static("text/event-stream"));
    let head = request_head(&uri, &headers)?;
    let (parts, body) = open(
        connector(),
        EventRequest {
            uri,
            head,
            read_size,
        },
    )
    .await?;
    Ok((parts, body, head_rx.await.unwrap()))
}

/// All of a body, or its first error.
async fn drain(mut body: EventBody) -> Result<Vec<u8>, HttpError> {
    let mut all = Vec::new();
    while let Some(piece) = std::future::poll_fn(|cx| body.poll_piece(cx)).await {
        let piece = piece?;
        assert!(!piece.is_empty(), "empty pieces are never handed up");
        all.extend_from_slice(&piece);
    }
    Ok(all)
}

fn chunked(data: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut rest = data;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        wire.extend_from_slice(&rest[..n]);
        wire.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    wire
}

/// `wire` cut at the given points.
fn cut(wire: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    at.sort_unstable();
    at.dedup();
    let mut pieces = Vec::new();
    let mut from = 0;
    for c in at.into_iter().chain([wire.len()]) {
        if c > from {
            pieces.push(wire[from..c].to_vec());
            from = c;
        }
    }
    pieces
}

#[test]
fn the_request_head_is_a_plain_get() {
    let uri: hyper::Uri = "http://127.0.0.1:8080/v1/s?offset=-1&live=sse"
        .parse()
        .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", HeaderValue::from_static("ua/1"));
    headers.append("x-two", HeaderValue::from_static("a"));
    headers.append("x-two", HeaderValue::from_static("b"));
    let head = request_head(&uri, &headers).unwrap();
    assert_eq!(
        String::from_utf8(head).unwrap(),
        "GET /v1/s?offset=-1&live=sse HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\
         user-agent: ua/1\r\nx-two: a\r\nx-two: b\r\n\r\n"
    );
    // A host header given is kept, not doubled.
    headers.insert("host", HeaderValue::from_static("example"));
    let head = String::from_utf8(request_head(&uri, &headers).unwrap()).unwrap();
    assert_eq!(head.matches("host:").count(), 1, "{head}");
    assert!(head.contains("host: example\r\n"), "{head}");
}

#[test]
fn framing_follows_rfc_9112() {
    let h = |pairs: &[(&str, &str)]| {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            m.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    };
    let ok = StatusCode::OK;
    let of = |s, pairs: &[(&str, &str)]| Framing::of(s, &h(pairs)).map_err(|e| e.to_string());
    assert_eq!(of(ok, &[]), Ok(Framing::UntilClose));
    assert_eq!(
        of(StatusCode::NO_CONTENT, &[("content-length", "5")]),
        Ok(Framing::Done)
    );
    assert_eq!(of(StatusCode::NOT_MODIFIED, &[]), Ok(Framing::Done));
    assert_eq!(of(ok, &[("content-length", "0")]), Ok(Framing::Done));
    assert_eq!(of(ok, &[("content-length", "12")]), Ok(Framing::Length(12)));
    assert_eq!(
        of(ok, &[("content-length", "12, 12")]),
        Ok(Framing::Length(12))
    );
    assert!(of(ok, &[("content-length", "12"), ("content-length", "13")]).is_err());
    assert!(of(ok, &[("content-length", "-1")]).is_err());
    assert!(of(ok, &[("content-length", "1x")]).is_err());
    let chunked = Ok(Framing::Chunked(Chunk::Size));
    assert_eq!(of(ok, &[("transfer-encoding", "chunked")]), chunked);
    assert_eq!(of(ok, &[("transfer-encoding", "Chunked")]), chunked);
    assert_eq!(of(ok, &[("transfer-encoding", "gzip, chunked")]), chunked);
    assert_eq!(
        of(
            ok,
            &[
                ("transfer-encoding", "gzip"),
                ("transfer-encoding", "chunked")
            ]
        ),
        chunked
    );
    // Transfer-Encoding wins over Content-Length (9112, 6.3 item 3).
    assert_eq!(
        of(
            ok,
            &[("transfer-encoding", "chunked"), ("content-length", "3")]
        ),
        chunked
    );
    assert_eq!(
        of(ok, &[("transfer-encoding", "chunked, gzip")]),
        Ok(Framing::UntilClose)
    );
}

#[test]
fn malformed_chunked_bodies_are_errors() {
    let chunked = Framing::Chunked(Chunk::Size);
    for (wire, why) in [
        (
            &b"zz\r\nabc\r\n0\r\n\r\n"[..],
            "a size that is no hex number",
        ),
        (b"3\r\nabcX\r\n0\r\n\r\n", "data not followed by CRLF"),
        (b"3\r\nabc\rX0\r\n\r\n", "CR without LF"),
        (b"ffffffffffffffffff\r\n", "a size beyond u64"),
        (b"3\r\nab", "a body cut in a chunk"),
        (b"3\r\nabc\r\n", "a body cut before the last chunk"),
        (
            b"3\r\nabc\r\n0\r\nx-trailer: 1\r\n",
            "a body cut in the trailers",
        ),
    ] {
        let err = decode_all(chunked, [wire]);
        assert!(err.is_err(), "{why}: {err:?}");
    }
    let long = format!("3;{}\r\nabc\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE));
    assert!(
        decode_all(chunked, [long.as_bytes()]).is_err(),
        "a size line without end"
    );
    let many_trailers = format!("0\r\n{}", "x-t: 1\r\n".repeat(MAX_TRAILERS / 8 + 1));
    assert!(
        decode_all(chunked, [many_trailers.as_bytes()]).is_err(),
        "endless trailers"
    );
    // A length-framed body cut short.
    assert!(decode_all(Framing::Length(5), [&b"abc"[..]]).is_err());
}

#[test]
fn chunk_extensions_and_trailers_are_skipped() {
    let wire = b"3;name=value\r\nabc\r\n2\r\nde\r\n0\r\nx-trailer: 1\r\n\r\nignored".to_vec();
    assert_eq!(
        decode_all(Framing::Chunked(Chunk::Size), [&wire[..]]).unwrap(),
        b"abcde"
    );
}

proptest! {
    /// Any body, any chunk sizes, any cuts into reads: the same bytes out.
    #[test]
    fn chunked_bodies_decode_whatever_the_reads(
        data in proptest::collection::vec(any::<u8>(), 0..600),
        sizes in proptest::collection::vec(1usize..80, 1..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        let wire = chunked(&data, &sizes);
        let pieces = cut(&wire, &cuts);
        prop_assert_eq!(decode_all(Framing::Chunked(Chunk::Size), pieces.iter().map(Vec::as_slice)).unwrap(), data.clone());
        // Length framing stops at its length, whatever follows.
        let mut with_more = data.clone();
        with_more.extend_from_slice(b"next");
        let pieces = cut(&with_more, &cuts);
        let framing = if data.is_empty() { Framing::Done } else { Framing::Length(data.len() as u64) };
        prop_assert_eq!(decode_all(framing, pieces.iter().map(Vec::as_slice)).unwrap(), data);
    }
}

#[tokio::test]
async fn a_chunked_answer_arrives_whole_and_the_head_is_kept() {
    let events = b"data: one\n\ndata: two\n\n".repeat(50);
    let mut wire = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
        stream-next-offset: 42\r\ntransfer-encoding: chunked\r\n\r\n"
        .to_vec();
    wire.extend_from_slice(&chunked(&events, &[7, 100, 3]));
    let (parts, body, sent) = get(cut(&wire, &[10, 40, 90, 91, 200, 333]), true, SCRATCH)
        .await
        .unwrap();
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers["stream-next-offset"], "42");
    assert_eq!(parts.headers["content-type"], "text/event-stream");
    assert_eq!(body.content_length(), None);
    assert_eq!(drain(body).await.unwrap(), events);
    let sent = String::from_utf8(sent).unwrap();
    assert!(
        sent.starts_with("GET /v1/s?offset=-1&live=sse HTTP/1.1\r\nhost: 127.0.0.1:"),
        "{sent}"
    );
    assert!(sent.contains("\r\naccept: text/event-stream\r\n"), "{sent}");
}

#[tokio::test]
async fn informational_answers_are_skipped_and_101_refused() {
    let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
        HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
        .to_vec();
    let (parts, body, _) = get(vec![wire], true, SCRATCH).await.unwrap();
    assert_eq!(parts.status, StatusCode::OK);
    assert!(parts.headers.get("link").is_none());
    assert_eq!(body.content_length(), Some(5));
    assert_eq!(drain(body).await.unwrap(), b"hello");
    let wire = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n".to_vec();
    assert!(get(vec![wire], true, SCRATCH).await.is_err());
}

#[tokio::test]
async fn a_body_until_close_ends_at_close_and_a_cut_one_fails() {
    let wire = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\ndata: x\n\n".to_vec();
    let (_, body, _) = get(cut(&wire, &[5, 41]), false, SCRATCH).await.unwrap();
    assert_eq!(drain(body).await.unwrap(), b"data: x\n\n");
    let wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab".to_vec();
    let (_, body, _) = get(vec![wire], false, SCRATCH).await.unwrap();
    let err = drain(body).await.unwrap_err();
    assert!(err.to_string().contains("closed before"), "{err}");
    let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nab".to_vec();
    let (_, body, _) = get(vec![wire], false, SCRATCH).await.unwrap();
    assert!(drain(body).await.is_err());
}

#[tokio::test]
async fn bad_heads_are_errors_and_a_refused_connection_sent_nothing() {
    for (wire, why) in [
        (
            &b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n"[..],
            "a header without colon",
        ),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "a four-digit status"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "no HTTP at all"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            "two lengths",
        ),
        (b"HTTP/1.1 200 OK\r\n", "closed in the head"),
    ] {
        let result = get(vec![wire.to_vec()], false, SCRATCH).await;
        assert!(result.is_err(), "{why}");
        assert!(
            !result.err().unwrap().nothing_sent(),
            "{why}: the request went out"
        );
    }
    let huge = format!(
        "HTTP/1.1 200 OK\r\n{}\r\n",
        format!("x-pad: {}\r\n", "p".repeat(MAX_HEAD / 2)).repeat(2)
    );
    let err = get(vec![huge.into_bytes()], true, SCRATCH)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("larger than"), "{err}");
    // Nobody listens on a port just released.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let uri: hyper::Uri = format!("http://127.0.0.1:{port}/s").parse().unwrap();
    let head = request_head(&uri, &HeaderMap::new()).unwrap();
    let err = open(
        connector(),
        EventRequest {
            uri,
            head,
            read_size: SCRATCH,
        },
    )
    .await
    .err()
    .unwrap();
    assert!(err.nothing_sent(), "{err}");
}

/// Through the engine: the idle timeout still fires on a silent SSE body,
/// and pieces are at most the read size.
#[tokio::test]
async fn the_engine_reads_events_in_bounded_pieces_under_its_idle_timer() {
    let data = vec![b'e'; 5000];
    let mut wire = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
        data.len() + 10
    )
    .into_bytes();
    wire.extend_from_slice(&data);
    let (uri, _head) = serve_once(vec![wire], true).await;
    let engine = super::super::HttpEngine::new(
        reqwest::Client::new(),
        Some(super::super::DirectSettings {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_millis(200),
            pool_max_idle_per_host: 1,
            pool_idle_timeout: None,
            sse_read_buffer: Some(1024),
        }),
        false,
    );
    let url: url::Url = uri.to_string().parse().unwrap();
    let req = super::super::OutgoingRequest {
        method: reqwest::Method::GET,
        url: &url,
        sent: super::super::SentUrl::new(&url, |out| out.push_str("offset=-1&live=sse")),
        headers: HeaderMap::new(),
        body: Bytes::new(),
        timeout: None,
        event_stream: true,
    };
    let resp = engine.send(req).await.unwrap();
    let mut body = resp.into_body();
    let mut got = 0;
    let err = loop {
        match body.next().await {
            Some(Ok(piece)) => {
                assert!(piece.len() <= 1024);
                got += piece.len();
            }
            Some(Err(e)) => break e,
            None => panic!("the body cannot end: 10 bytes are missing"),
        }
    };
    assert_eq!(got, data.len());
    assert!(err.is_timeout(), "{err}");
}

proptest! {
    /// The fuzz entry's invariant over arbitrary bodies behind real heads:
    /// cuts never change what decodes, nothing panics.
    #[test]
    fn fuzz_entry_holds_for_arbitrary_bodies(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        head in prop::sample::select(vec![
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 17\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.0 204 No Content\r\n\r\n",
        ]),
        sizes in proptest::collection::vec(1usize..40, 1..5),
    ) {
        let mut data = head.as_bytes().to_vec();
        data.extend_from_slice(&body);
        fuzz_entry(&data, &sizes);
        let mut valid = head.as_bytes().to_vec();
        valid.extend_from_slice(&chunked(&body, &sizes));
        fuzz_entry(&valid, &sizes);
    }
}
