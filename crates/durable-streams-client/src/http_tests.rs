//! Both paths of the engine, held to one contract against a scripted
//! server: the same headers on the wire, the same timeouts, the same
//! "nothing was sent" answer for a refused connection.

use std::time::Duration;

use super::*;
use crate::testing::{Reply, ScriptedServer};

const IDLE: Duration = Duration::from_millis(300);

fn settings() -> DirectSettings {
    DirectSettings {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: IDLE,
        pool_max_idle_per_host: 4,
        pool_idle_timeout: Some(Duration::from_secs(10)),
        sse_read_buffer: None,
    }
}

/// The direct engine, and one that sends everything through reqwest.
fn engines() -> [(&'static str, HttpEngine); 2] {
    let reqwest = || {
        reqwest::Client::builder()
            .read_timeout(IDLE)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    };
    [
        (
            "direct",
            HttpEngine::new(reqwest(), Some(settings()), false),
        ),
        ("reqwest", HttpEngine::new(reqwest(), None, false)),
    ]
}

fn request(method: Method, url: &str, body: &'static [u8]) -> OutgoingRequest<'static> {
    // Leaked: a few URLs per test, for the request's borrow.
    let url: &'static url::Url = Box::leak(Box::new(url.parse().unwrap()));
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", HeaderValue::from_static("test-agent"));
    OutgoingRequest {
        method,
        url,
        sent: SentUrl::new(url, |_| {}),
        headers,
        body: Bytes::from_static(body),
        timeout: Some(Duration::from_secs(5)),
        event_stream: false,
    }
}

async fn body_of(mut resp: Response) -> Result<Vec<u8>, HttpError> {
    let mut all = Vec::new();
    while let Some(piece) = resp.chunk().await? {
        all.extend_from_slice(&piece);
    }
    Ok(all)
}

#[tokio::test]
async fn both_paths_send_the_same_request() {
    let server = ScriptedServer::start(|_, _| Reply::status(204)).await;
    for (path, engine) in engines() {
        let url = server.url("/s");
        let resp = engine.send(request(Method::POST, &url, b"")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "{path}");
        let resp = engine.send(request(Method::GET, &url, b"")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "{path}");
        engine
            .send(request(Method::POST, &url, b"abc"))
            .await
            .unwrap();
    }
    let seen = server.requests();
    assert_eq!(seen.len(), 6);
    for pair in seen.chunks(3) {
        let [empty_post, get, post] = pair else {
            unreachable!()
        };
        for r in pair {
            assert_eq!(r.header("user-agent"), Some("test-agent"));
            assert_eq!(r.header("accept"), Some("*/*"));
            assert!(
                r.header("host")
                    .is_some_and(|h| h.starts_with("127.0.0.1:"))
            );
        }
        // A write always says how long its (empty) body is; a GET sends none.
        assert_eq!(empty_post.header("content-length"), Some("0"));
        assert_eq!(get.header("content-length"), None);
        assert_eq!(post.header("content-length"), Some("3"));
        assert_eq!(post.body, b"abc");
    }
}

#[tokio::test]
async fn bodies_arrive_whole_in_pieces() {
    let server = ScriptedServer::start(|_, _| Reply::Stream {
        status: 200,
        headers: Vec::new(),
        parts: vec![
            (Duration::ZERO, b"hello ".to_vec()),
            (Duration::from_millis(20), b"world".to_vec()),
        ],
    })
    .await;
    for (path, engine) in engines() {
        let resp = engine
            .send(request(Method::GET, &server.url("/s"), b""))
            .await
            .unwrap();
        assert_eq!(resp.content_length(), None, "{path}");
        assert_eq!(body_of(resp).await.unwrap(), b"hello world", "{path}");
        let resp = engine
            .send(request(Method::GET, &server.url("/s"), b""))
            .await
            .unwrap();
        use futures::TryStreamExt;
        let pieces: Vec<Bytes> = resp.into_body().try_collect().await.unwrap();
        assert_eq!(pieces.concat(), b"hello world", "{path}");
    }
}

#[tokio::test]
async fn a_silent_body_times_out_after_the_idle_timeout() {
    let server = ScriptedServer::start(|_, _| Reply::Stream {
        status: 200,
        headers: Vec::new(),
        parts: vec![(Duration::ZERO, b"a".to_vec()), (IDLE * 5, b"b".to_vec())],
    })
    .await;
    for (path, engine) in engines() {
        let mut live = request(Method::GET, &server.url("/s"), b"");
        live.timeout = None;
        let started = std::time::Instant::now();
        let mut resp = engine.send(live).await.unwrap();
        assert_eq!(resp.chunk().await.unwrap().as_deref(), Some(&b"a"[..]));
        let err = resp.chunk().await.unwrap_err();
        assert!(err.is_timeout(), "{path}: {err:?}");
        assert!(!err.nothing_sent(), "{path}");
        let waited = started.elapsed();
        assert!(waited >= IDLE && waited < IDLE * 4, "{path}: {waited:?}");
    }
}

#[tokio::test]
async fn the_total_timeout_covers_the_body() {
    // Bytes keep coming (the idle timeout never fires), but the request as
    // a whole takes longer than its timeout.
    let parts = (0..20)
        .map(|_| (Duration::from_millis(100), b"x".to_vec()))
        .collect::<Vec<_>>();
    let server = ScriptedServer::start(move |_, _| Reply::Stream {
        status: 200,
        headers: Vec::new(),
        parts: parts.clone(),
    })
    .await;
    for (path, engine) in engines() {
        let mut req = request(Method::GET, &server.url("/s"), b"");
        req.timeout = Some(Duration::from_millis(700));
        let resp = engine.send(req).await.unwrap();
        let err = body_of(resp).await.unwrap_err();
        assert!(err.is_timeout(), "{path}: {err:?}");
    }
}

#[tokio::test]
async fn a_silent_server_times_out_before_the_head() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/s", listener.local_addr().unwrap());
    // Accepts and reads nothing, answers nothing.
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    for (path, engine) in engines() {
        let mut req = request(Method::POST, &url, b"data");
        req.timeout = Some(Duration::from_millis(200));
        let err = engine.send(req).await.unwrap_err();
        assert!(err.is_timeout(), "{path}: {err:?}");
        assert!(!err.nothing_sent(), "{path}: the request was written");
    }
}

#[tokio::test]
async fn a_refused_connection_sent_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/s", listener.local_addr().unwrap());
    drop(listener);
    for (path, engine) in engines() {
        let err = engine
            .send(request(Method::POST, &url, b"data"))
            .await
            .unwrap_err();
        assert!(err.nothing_sent(), "{path}: {err:?}");
        assert!(!err.is_timeout(), "{path}");
        assert!(!err.to_string().is_empty());
    }
}

#[tokio::test]
async fn urls_with_credentials_and_https_take_the_reqwest_path() {
    let (_, direct) = engines().into_iter().next().unwrap();
    assert!(
        direct
            .direct_for(&"http://h:1/s".parse().unwrap())
            .is_some()
    );
    assert!(direct.direct_for(&"https://h/s".parse().unwrap()).is_none());
    assert!(
        direct
            .direct_for(&"http://u:p@h:1/s".parse().unwrap())
            .is_none()
    );
}

#[tokio::test]
async fn a_url_too_long_for_a_request_line_is_refused_before_sending() {
    // `url` accepts it; HTTP request targets stop at 64 KiB.
    let long = format!("http://127.0.0.1:9/{}", "a".repeat(70_000));
    for (path, engine) in engines() {
        let err = engine
            .send(request(Method::POST, &long, b"x"))
            .await
            .unwrap_err();
        assert!(err.is_invalid_request(), "{path}: {err:?}");
        assert!(err.nothing_sent(), "{path}");
    }
}

/// SSE reads (on their own connections, `http_events.rs`) take at most
/// `sse_read_buffer` bytes per socket read, so a body larger than it comes
/// in pieces no larger; a head larger than it is fine; and other requests
/// on the same engine are untouched.
#[tokio::test]
async fn sse_reads_take_at_most_the_read_buffer_per_piece_and_any_head() {
    let big: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let body = big.clone();
    let long = "v".repeat(3_000);
    let server = ScriptedServer::start(move |_, _| {
        Reply::status(200)
            .with_header("x-long", &long)
            .with_body(&body)
    })
    .await;
    let engine = HttpEngine::new(
        reqwest::Client::new(),
        Some(DirectSettings {
            sse_read_buffer: Some(1024),
            ..settings()
        }),
        false,
    );
    let url = server.url("/s");
    let events = OutgoingRequest {
        event_stream: true,
        timeout: None,
        ..request(Method::GET, &url, b"")
    };
    let mut resp = engine.send(events).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.content_length(), Some(big.len() as u64));
    let mut all = Vec::new();
    let mut pieces = 0;
    while let Some(piece) = resp.chunk().await.unwrap() {
        assert!(piece.len() <= 1024, "a piece of {} bytes", piece.len());
        all.extend_from_slice(&piece);
        pieces += 1;
    }
    assert_eq!(all, big);
    assert!(pieces >= 10, "{pieces} pieces");
    let resp = engine.send(request(Method::GET, &url, b"")).await.unwrap();
    assert_eq!(body_of(resp).await.unwrap(), big);
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, "/s");
        assert_eq!(r.header("user-agent"), Some("test-agent"));
        assert_eq!(r.header("accept"), Some("*/*"));
        assert_eq!(r.header("host"), Some(&url["http://".len()..url.len() - 2]));
    }
}

/// Both paths send the same target: the URL's path with the request's own
/// query (the URL's query and fragment replaced), bytes kept as encoded.
#[test]
fn both_paths_send_the_same_target() {
    let cases = [
        ("http://h:1/v1/stream/a", None, "http://h:1/v1/stream/a"),
        (
            "http://h:1/v1/stream/a?old=1#frag",
            Some("offset=-1&live=long-poll"),
            "http://h:1/v1/stream/a?offset=-1&live=long-poll",
        ),
        ("http://h/s%20t/x?q=1", None, "http://h/s%20t/x"),
        (
            "http://[::1]:8/p",
            Some("cursor=a%2Fb"),
            "http://[::1]:8/p?cursor=a%2Fb",
        ),
    ];
    for (url, query, sent) in cases {
        let mut req = request(Method::GET, url, b"");
        req.sent = SentUrl::new(req.url, |out| out.push_str(query.unwrap_or_default()));
        assert_eq!(req.sent.query(), query, "query, from {url}");
        let uri = req.sent.clone().into_uri().unwrap();
        assert_eq!(uri.to_string(), sent, "direct, from {url}");
        assert_eq!(req.full_url().as_str(), sent, "reqwest, from {url}");
    }
}
