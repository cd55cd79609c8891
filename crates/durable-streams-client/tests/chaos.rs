//! Chaos tests: the client against the real servers behind the fault proxy
//! (`test_servers::fault_proxy`), which redirects, fails after applying a
//! write, replays stale answers, cuts SSE, rewrites or strips protocol
//! headers and black-holes requests. Each test asserts the typed outcome and
//! a bound on the number of requests the client made.

mod common;

use std::time::{Duration, Instant};

use durable_streams_client::{
    Client, DecodeKind, ErrorKind, LiveMode, Offset, RetryPolicy, Stream,
};
use futures::StreamExt;
use test_servers::fault_proxy::{Fault, FaultProxy, Rule};
use test_servers::{ServerKind, TestServer, both, http_request, url_path};

const TEXT: (&str, &str) = ("content-type", "text/plain");

/// A stream created directly on `server` (not through the proxy), with
/// `data` appended; returns its upstream URL.
fn upstream_stream(server: &TestServer, prefix: &str, data: &[&[u8]]) -> String {
    let url = server.unique_stream_url(prefix);
    let r = http_request("PUT", &url, &[TEXT], b"").unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    for d in data {
        upstream_append(&url, d);
    }
    url
}

fn upstream_append(url: &str, data: &[u8]) {
    let r = http_request("POST", url, &[TEXT], data).unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
}

/// Everything in the stream, read directly from the server.
fn upstream_content(url: &str) -> Vec<u8> {
    let r = http_request("GET", &format!("{url}?offset=-1"), &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.body
}

/// The stream's current tail offset, from the server directly.
fn upstream_tail(url: &str) -> String {
    let r = http_request("HEAD", url, &[], b"").unwrap();
    r.header("stream-next-offset").unwrap().to_owned()
}

/// The client's handle for `upstream_url`, through the proxy.
/// The read failed with `expected`, after at most `max_gets` GETs of `path`.
fn assert_typed_and_bounded(
    proxy: &FaultProxy,
    path: &str,
    err: &durable_streams_client::Error,
    expected: ErrorKind,
    max_gets: u64,
    kind: impl std::fmt::Display,
) {
    assert_eq!(err.kind(), &expected, "{kind}: {err:?}");
    assert!(
        proxy.requests("GET", path) <= max_gets,
        "{kind}: {:?}",
        proxy.request_log()
    );
}

fn via(proxy: &FaultProxy, client: &Client, upstream_url: &str) -> Stream {
    client
        .stream(proxy.url_of(upstream_url))
        .expect("stream url")
        .with_content_type("text/plain")
}

fn gets_with(proxy: &FaultProxy, path: &str, query_part: &str) -> usize {
    proxy
        .request_log()
        .iter()
        .filter(|l| l.starts_with(&format!("GET {path}?")) && l.contains(query_part))
        .count()
}

// ---------------------------------------------------------------------------
// Redirects
// ---------------------------------------------------------------------------

#[tokio::test]
async fn redirected_append_is_a_typed_error_and_writes_nothing() {
    for kind in both() {
        let server = TestServer::start(kind);
        let proxy = FaultProxy::start(&server);
        let client = common::client();
        let url = upstream_stream(&server, "redirect", &[]);
        let other = upstream_stream(&server, "redirect-target", &[]);
        let path = url_path(&url).to_owned();
        let cases = [
            // Not a method-preserving redirect: never followed for a write.
            (302, proxy.url_of(&other)),
            (303, url_path(&other).to_owned()),
            (301, proxy.url_of(&other)),
            // Method-preserving, but to another origin (the server itself).
            (307, other.clone()),
            (308, other.clone()),
        ];
        for (status, location) in cases {
            proxy.clear_rules();
            proxy.reset_counters();
            proxy.add_rule(
                Rule::new(Fault::Redirect {
                    status,
                    location: location.clone(),
                })
                .method("POST")
                .path(&path),
            );
            let err = via(&proxy, &client, &url)
                .append(&b"never"[..])
                .await
                .expect_err("a redirected append must fail");
            assert!(
                matches!(err.kind(), ErrorKind::Redirect { status: s, .. } if *s == status),
                "{kind} {status} -> {location}: {err:?}"
            );
            assert_eq!(proxy.requests("POST", &path), 1, "{kind} {status}: retried");
            assert_eq!(proxy.total_requests(), 1, "{kind} {status}: followed");
        }
        assert!(upstream_content(&url).is_empty(), "{kind}");
        assert!(upstream_content(&other).is_empty(), "{kind}");
    }
}

// ---------------------------------------------------------------------------
// Writes applied, answer lost
// ---------------------------------------------------------------------------

#[tokio::test]
async fn gateway_error_after_an_applied_append_is_outcome_unknown() {
    for kind in both() {
        let server = TestServer::start(kind);
        let proxy = FaultProxy::start(&server);
        let client = common::client();
        for status in [502, 504] {
            let url = upstream_stream(&server, "gateway", &[]);
            let path = url_path(&url).to_owned();
            proxy.add_rule(
                Rule::new(Fault::StatusAfterForward(status))
                    .method("POST")
                    .path(&path),
            );
            let err = via(&proxy, &client, &url)
                .append(&b"once"[..])
                .await
                .expect_err("the append's answer was lost");
            assert!(err.is_outcome_unknown(), "{kind} {status}: {err:?}");
            assert_eq!(
                proxy.requests("POST", &path),
                1,
                "{kind} {status}: a plain append was retried"
            );
            assert_eq!(upstream_content(&url), b"once", "{kind} {status}");
        }
    }
}

#[tokio::test]
async fn connection_dropped_after_an_applied_append_is_outcome_unknown() {
    for kind in both() {
        let server = TestServer::start(kind);
        let proxy = FaultProxy::start(&server);
        let client = common::client();
        let url = upstream_stream(&server, "dropped", &[]);
        let path = url_path(&url).to_owned();
        proxy.add_rule(
            Rule::new(Fault::DropAfterForward)
                .method("POST")
                .path(&path),
        );
        let err = via(&proxy, &client, &url)
            .append(&b"once"[..])
            .await
            .expect_err("the connection dropped");
        assert!(err.is_outcome_unknown(), "{kind}: {err:?}");
        assert_eq!(
            proxy.requests("POST", &path),
            1,
            "{kind}: a plain append was retried"
        );
        assert_eq!(upstream_content(&url), b"once", "{kind}");
    }
}

// ---------------------------------------------------------------------------
// A misbehaving cache
// ---------------------------------------------------------------------------

#[tokio::test]
async fn stale_long_poll_replay_is_bounded_and_ends_in_no_progress() {
    for kind in both() {
        let server = TestServer::start(kind);
        let proxy = FaultProxy::start(&server);
        let client = common::client();
        let url = upstream_stream(&server, "stale-lp", &[b"a"]);
        let path = url_path(&url).to_owned();
        let tail = Offset::parse(&upstream_tail(&url)).unwrap();
        // Every long-poll gets the first long-poll's answer (a timeout
        // without data, whose cursor never moves), at once.
        proxy.add_rule(
            Rule::new(Fault::StaleReplay)
                .method("GET")
                .path(&path)
                .query("live=long-poll"),
        );
        let stream = via(&proxy, &client, &url);
        let mut read = stream.read().offset(tail).live(LiveMode::LongPoll).bytes();
        let started = Instant::now();
        let writer_url = url.clone();
        let writer = tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(1500));
            upstream_append(&writer_url, b"unseen");
        });
        // Up-to-date signals (empty chunks) are fine; data cannot come
        // through the stale cache; the read must end in an error.
        let mut outcome = None;
        let mut polls_in_3s = None;
        let deadline = started + Duration::from_secs(30);
        while outcome.is_none() && Instant::now() < deadline {
            if polls_in_3s.is_none() && started.elapsed() >= Duration::from_secs(3) {
                polls_in_3s = Some(gets_with(&proxy, &path, "live=long-poll"));
            }
            match tokio::time::timeout(Duration::from_millis(100), read.next()).await {
                Ok(Some(Ok(chunk))) => {
                    assert!(
                        chunk.data.is_empty(),
                        "{kind}: data through a stale cache: {chunk:?}"
                    )
                }
                Ok(Some(Err(e))) => outcome = Some(e),
                Ok(None) => panic!("{kind}: the read ended without an error"),
                Err(_) => {}
            }
        }
        let polls_in_3s = polls_in_3s.unwrap_or_else(|| gets_with(&proxy, &path, "live=long-poll"));
        assert!(polls_in_3s <= 15, "{kind}: {polls_in_3s} long-polls in 3 s");
        writer.await.unwrap();
        let err = outcome.unwrap_or_else(|| panic!("{kind}: no outcome within 30 s"));
        assert!(
            matches!(err.kind(), ErrorKind::NoProgress { .. }),
            "{kind}: {err:?}"
        );
        let polls = gets_with(&proxy, &path, "live=long-poll");
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "figure: {kind}: stale long-poll replay: {polls_in_3s} long-polls in 3 s, {polls} in all, {:?} after {elapsed:.1} s",
            err.kind()
        );
        assert!(
            polls as f64 <= 15.0 + 5.0 * elapsed,
            "{kind}: {polls} long-polls in {elapsed:.1} s"
        );
    }
}

#[tokio::test]
async fn stale_catch_up_replay_is_bounded_and_fails_typed() {
    for kind in both() {
        let server = TestServer::start(kind);
        let proxy = FaultProxy::start(&server);
        let client = common::client();
        let url = upstream_stream(&server, "stale-cu", &[b"a"]);
        let path = url_path(&url).to_owned();
        let after_a = Offset::parse(&upstream_tail(&url)).unwrap();
        proxy.add_rule(Rule::new(Fault::StaleReplay).method("GET").path(&path));
        // Prime the cache with the read from the start: "a", up to date.
        let primed = http_request(
            "GET",
            &format!("{}?offset=-1", proxy.url_of(&url)),
            &[],
            b"",
        )
        .unwrap();
        assert_eq!(primed.body, b"a");
        upstream_append(&url, b"b");
        proxy.reset_counters();
        // Reading on from after "a" gets "a" again, with the offset that
        // does not move.
        let started = Instant::now();
        let result = tokio::time::timeout(
            Duration::from_secs(60),
            via(&proxy, &client, &url)
                .read()
                .offset(after_a)
                .collect_bytes(),
        )
        .await
        .expect("no outcome within 60 s");
        let err = result.expect_err("a stale replay must not pass as data");
        assert!(
            matches!(
                err.kind(),
                ErrorKind::NoProgress { .. } | ErrorKind::Decode(DecodeKind::Offset)
            ),
            "{kind}: {err:?}"
        );
        let gets = proxy.requests("GET", &path);
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "figure: {kind}: stale catch-up replay: {gets} reads, {:?} after {elapsed:.1} s",
            err.kind()
        );
        assert!(
            gets as f64 <= 15.0 + 5.0 * elapsed,
            "{kind}: {gets} reads in {elapsed:.1} s"
        );
    }
}

// ---------------------------------------------------------------------------
// SSE cut after every first control event
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sse_cut_after_each_control_event_reconnects_boundedly() {
    for kind in both() {
        let server = TestServer::start(kind);
        let proxy = FaultProxy::start(&server);
        let client = common::client();
        let url = upstream_stream(&server, "sse-cut", &[b"a"]);
        let path = url_path(&url).to_owned();
        proxy.add_rule(Rule::new(Fault::CutSseAfterFirstControl).query("live=sse"));
        let mut read = via(&proxy, &client, &url)
            .read()
            .offset(Offset::start())
            .live(LiveMode::Sse)
            .bytes();
        let started = Instant::now();
        let mut delivered = Vec::new();
        let mut outcome = None;
        while started.elapsed() < Duration::from_secs(3) {
            match tokio::time::timeout(Duration::from_millis(200), read.next()).await {
                Ok(Some(Ok(chunk))) => delivered.extend_from_slice(&chunk.data),
                Ok(Some(Err(e))) => {
                    outcome = Some(e);
                    break;
                }
                Ok(None) => panic!("{kind}: the read ended without an error"),
                Err(_) => {}
            }
        }
        let sse = gets_with(&proxy, &path, "live=sse");
        println!(
            "figure: {kind}: SSE cut after each control event: {sse} connections in 3 s, outcome {:?}",
            outcome.as_ref().map(|e| e.kind().clone())
        );
        assert!(sse <= 15, "{kind}: {sse} SSE connections in 3 s");
        assert!(sse >= 2, "{kind}: did not reconnect ({sse})");
        assert_eq!(delivered, b"a", "{kind}: delivered twice or lost");
        if let Some(e) = outcome {
            assert!(
                matches!(e.kind(), ErrorKind::NoProgress { .. }),
                "{kind}: {e:?}"
            );
        }
    }
}

#[tokio::test]
async fn auto_falls_back_to_long_poll_when_sse_keeps_being_cut() {
    for kind in both() {
        let server = TestServer::start(kind);
        let proxy = FaultProxy::start(&server);
        let client = common::client();
        let url = upstream_stream(&server, "auto-cut", &[b"a"]);
        let path = url_path(&url).to_owned();
        proxy.add_rule(Rule::new(Fault::CutSseAfterFirstControl).query("live=sse"));
        let mut read = via(&proxy, &client, &url)
            .read()
            .offset(Offset::start())
            .live(LiveMode::Auto)
            .bytes();
        let writer_url = url.clone();
        let writer = tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(1500));
            upstream_append(&writer_url, b"b");
        });
        let mut delivered = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while delivered != b"ab" {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, read.next()).await {
                Ok(Some(Ok(chunk))) => delivered.extend_from_slice(&chunk.data),
                other => panic!("{kind}: got {other:?} after {delivered:?}"),
            }
        }
        writer.await.unwrap();
        let sse = gets_with(&proxy, &path, "live=sse");
        let long_polls = gets_with(&proxy, &path, "live=long-poll");
        println!(
            "figure: {kind}: auto with SSE always cut: {sse} SSE connections, then {long_polls} long-polls"
        );
        assert!(
            sse <= 10,
            "{kind}: {sse} SSE connections before falling back"
        );
        assert!(long_polls >= 1, "{kind}: never fell back to long-poll");
    }
}

// ---------------------------------------------------------------------------
// Broken protocol headers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn next_offset_going_backwards_is_a_typed_decode_error() {
    for kind in both() {
        let server = TestServer::start(kind);
        let proxy = FaultProxy::start(&server);
        let client = common::client();
        let url = upstream_stream(&server, "backwards", &[]);
        let path = url_path(&url).to_owned();
        let empty_tail = upstream_tail(&url);
        upstream_append(&url, b"a");
        let after_a = Offset::parse(&upstream_tail(&url)).unwrap();
        upstream_append(&url, b"b");
        proxy.add_rule(
            Rule::new(Fault::RewriteHeader {
                name: "Stream-Next-Offset".into(),
                value: empty_tail.clone(),
            })
            .method("GET")
            .path(&path),
        );
        let err = via(&proxy, &client, &url)
            .read()
            .offset(after_a)
            .collect_bytes()
            .await
            .expect_err("the offset went backwards");
        let expected = ErrorKind::Decode(DecodeKind::Offset);
        assert_typed_and_bounded(&proxy, &path, &err, expected, 2, kind);
    }
}

#[tokio::test]
async fn missing_next_offset_is_a_typed_decode_error() {
    for kind in both() {
        let server = TestServer::start(kind);
        let proxy = FaultProxy::start(&server);
        let client = common::client();
        let url = upstream_stream(&server, "no-offset", &[b"a"]);
        let path = url_path(&url).to_owned();
        proxy.add_rule(
            Rule::new(Fault::StripHeader("Stream-Next-Offset".into()))
                .method("GET")
                .path(&path),
        );
        let err = via(&proxy, &client, &url)
            .read()
            .collect_bytes()
            .await
            .expect_err("no Stream-Next-Offset");
        let expected = ErrorKind::Decode(DecodeKind::Header);
        assert_typed_and_bounded(&proxy, &path, &err, expected, 2, kind);
    }
}

#[tokio::test]
async fn missing_cursor_on_an_open_long_poll_is_a_typed_decode_error() {
    for kind in both() {
        let server = TestServer::start(kind);
        let proxy = FaultProxy::start(&server);
        let client = common::client();
        let url = upstream_stream(&server, "no-cursor", &[b"a"]);
        let path = url_path(&url).to_owned();
        let tail = Offset::parse(&upstream_tail(&url)).unwrap();
        proxy.add_rule(
            Rule::new(Fault::StripHeader("Stream-Cursor".into()))
                .method("GET")
                .path(&path)
                .query("live=long-poll"),
        );
        let writer_url = url.clone();
        let writer = tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(200));
            upstream_append(&writer_url, b"b");
        });
        let mut read = via(&proxy, &client, &url)
            .read()
            .offset(tail)
            .live(LiveMode::LongPoll)
            .bytes();
        // Skip up-to-date signals (empty chunks) until the long-poll
        // without a cursor answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, read.next()).await {
                Ok(Some(Ok(chunk))) if chunk.data.is_empty() => {}
                Ok(Some(Err(e))) => break e,
                other => panic!("{kind}: expected a header decode error, got {other:?}"),
            }
        };
        writer.await.unwrap();
        assert_eq!(
            err.kind(),
            &ErrorKind::Decode(DecodeKind::Header),
            "{kind}: {err:?}"
        );
        assert!(
            gets_with(&proxy, &path, "live=long-poll") <= 2,
            "{kind}: {:?}",
            proxy.request_log()
        );
    }
}

// ---------------------------------------------------------------------------
// A black hole
// ---------------------------------------------------------------------------

#[tokio::test]
async fn black_holed_requests_time_out_typed_and_bounded() {
    let server = TestServer::start(ServerKind::Rust);
    let proxy = FaultProxy::start(&server);
    let client = Client::builder()
        .request_timeout(Duration::from_millis(300))
        .retry_policy(
            RetryPolicy::default()
                .max_retries(2)
                .initial_delay(Duration::from_millis(10))
                .max_delay(Duration::from_millis(50)),
        )
        .build()
        .unwrap();
    let url = upstream_stream(&server, "hole", &[b"a"]);
    let path = url_path(&url).to_owned();
    proxy.add_rule(Rule::new(Fault::BlackHole).path(&path));
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(20), via(&proxy, &client, &url).head())
        .await
        .expect("the timeout did not fire")
        .expect_err("nothing answers");
    assert_eq!(err.kind(), &ErrorKind::Timeout, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let heads = proxy.requests("HEAD", &path);
    assert!((1..=3).contains(&heads), "{heads} HEADs");

    // A black-holed append: the outcome is unknown, and it is not retried.
    proxy.reset_counters();
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        via(&proxy, &client, &url).append(&b"lost?"[..]),
    )
    .await
    .expect("the timeout did not fire")
    .expect_err("nothing answers");
    assert_eq!(err.kind(), &ErrorKind::Timeout, "{err:?}");
    assert!(err.is_outcome_unknown(), "{err:?}");
    assert_eq!(proxy.requests("POST", &path), 1);
}

// ---------------------------------------------------------------------------
// Offsets on the wire
// ---------------------------------------------------------------------------

#[tokio::test]
async fn offsets_with_spaces_and_reserved_bytes_are_percent_encoded() {
    let server = TestServer::start(ServerKind::Node);
    let proxy = FaultProxy::start(&server);
    let client = common::client();
    let url = upstream_stream(&server, "wire", &[b"a"]);
    let path = url_path(&url).to_owned();
    // No server makes such offsets, so the read itself fails (400); what
    // matters is how the offset went on the wire.
    for (token, wire) in [
        ("x y", "offset=x%20y"),
        ("a+b", "offset=a%2Bb"),
        ("p%q", "offset=p%25q"),
    ] {
        let offset = Offset::parse(token).unwrap();
        let _ = via(&proxy, &client, &url)
            .read()
            .offset(offset)
            .collect_bytes()
            .await;
        let log = proxy.request_log();
        assert!(
            log.iter()
                .any(|l| l.starts_with(&format!("GET {path}?")) && l.contains(wire)),
            "{token:?}: {log:?}"
        );
    }
}
