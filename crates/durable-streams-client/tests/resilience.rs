//! Retries, backoff and fault handling, with faults injected by the Node
//! reference server (`/_test/inject-error`) and by a connection-cutting proxy.

mod common;

use std::time::{Duration, Instant};

use durable_streams_client::{
    AppendOptions, CreateOptions, DecodeKind, ErrorKind, LiveMode, RetryPolicy,
};
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn reads_retry_5xx_and_dropped_connections() {
    let server = common::node();
    let client = common::client();
    let s = common::stream(&server, &client, "retry").with_content_type("text/plain");
    s.create().await.unwrap();
    s.append("payload").await.unwrap();
    let path = common::path_of(&s);

    server
        .inject_error(&json!({"path": path, "method": "GET", "status": 503, "count": 2}))
        .unwrap();
    assert_eq!(s.read_text().await.unwrap(), "payload");

    server
        .inject_error(&json!({"path": path, "method": "GET", "dropConnection": true, "count": 2}))
        .unwrap();
    assert_eq!(s.read_text().await.unwrap(), "payload");

    server
        .inject_error(&json!({"path": path, "method": "HEAD", "status": 502, "count": 1}))
        .unwrap();
    assert!(s.head().await.is_ok());
}

#[tokio::test]
async fn retry_after_is_honoured_as_a_minimum() {
    let server = common::node();
    let client = common::client();
    let s = common::stream(&server, &client, "ra").with_content_type("text/plain");
    s.create().await.unwrap();
    server
        .inject_error(&json!({"path": common::path_of(&s), "method": "POST", "status": 429, "retryAfter": 1, "count": 1}))
        .unwrap();
    let started = Instant::now();
    s.append("x").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        s.read_text().await.unwrap(),
        "x",
        "a 429 append was not applied, so retrying it is safe"
    );
}

#[tokio::test]
async fn exhausted_retries_surface_the_server_error() {
    let server = common::node();
    let client = durable_streams_client::Client::builder()
        .retry_policy(
            RetryPolicy::default()
                .max_retries(2)
                .initial_delay(Duration::from_millis(5))
                .max_delay(Duration::from_millis(20)),
        )
        .build()
        .unwrap();
    let s = common::stream(&server, &client, "exhaust").with_content_type("text/plain");
    s.create().await.unwrap();
    server
        .inject_error(
            &json!({"path": common::path_of(&s), "method": "GET", "status": 500, "count": 3}),
        )
        .unwrap();
    let err = s.read_bytes().await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Server { status: 500 });
    assert_eq!(err.status(), Some(500));
    assert!(err.is_retryable());
    // The three faults were consumed by 1 attempt + 2 retries: the next read succeeds.
    assert!(s.read_bytes().await.is_ok());

    server.inject_error(&json!({"path": common::path_of(&s), "method": "GET", "status": 429, "count": 3, "retryAfter": 0})).unwrap();
    let err = s.read_bytes().await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::RateLimited { .. }), "{err}");
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let server = common::node();
    let client = common::client();
    let s = common::stream(&server, &client, "4xx").with_content_type("text/plain");
    s.create().await.unwrap();
    server
        .inject_error(
            &json!({"path": common::path_of(&s), "method": "GET", "status": 400, "count": 2}),
        )
        .unwrap();
    assert_eq!(
        s.read_bytes().await.unwrap_err().kind(),
        &ErrorKind::BadRequest
    );
    // One fault is left: the first read made exactly one request.
    assert_eq!(
        s.read_bytes().await.unwrap_err().kind(),
        &ErrorKind::BadRequest
    );
    assert!(s.read_bytes().await.is_ok());
}

#[tokio::test]
async fn a_dropped_plain_append_has_an_unknown_outcome() {
    let server = common::node();
    let client = common::client();
    let s = common::stream(&server, &client, "unknown").with_content_type("text/plain");
    s.create().await.unwrap();
    let path = common::path_of(&s);
    server
        .inject_error(&json!({"path": path, "method": "POST", "dropConnection": true, "count": 1}))
        .unwrap();
    let err = s.append("maybe").await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Network, "{err}");
    assert!(err.is_outcome_unknown(), "{err}");
    assert!(err.to_string().contains("outcome unknown"));

    // Opting in retries it.
    server
        .inject_error(&json!({"path": path, "method": "POST", "dropConnection": true, "count": 1}))
        .unwrap();
    let opts = AppendOptions::new().retry_unknown_outcome(true);
    s.append_with("sure", opts).await.unwrap();
    assert_eq!(s.read_text().await.unwrap(), "sure");
}

#[tokio::test]
async fn corrupted_and_truncated_json_is_a_decode_error() {
    let server = common::node();
    let client = common::client();
    let s = common::stream(&server, &client, "corrupt");
    s.create_with(CreateOptions::json()).await.unwrap();
    s.append_json(&json!({"key": "some long value that will be truncated"}))
        .await
        .unwrap();
    let path = common::path_of(&s);
    for fault in [
        json!({"truncateBodyBytes": 10}),
        json!({"corruptBody": true}),
    ] {
        let mut fault = fault;
        fault["path"] = json!(path);
        fault["method"] = json!("GET");
        fault["count"] = json!(1);
        server.inject_error(&fault).unwrap();
        let err = s.read_json::<serde_json::Value>().await.unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::Decode(DecodeKind::Json),
            "{fault}: {err}"
        );
        // The next read, without a fault, succeeds.
        assert_eq!(s.read_json::<serde_json::Value>().await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn sse_ignores_unknown_events_and_rejects_bad_control_events() {
    let server = common::node();
    let client = common::client();
    let s = common::stream(&server, &client, "ssefault").with_content_type("text/plain");
    s.create().await.unwrap();
    s.append("test-data").await.unwrap();
    let path = common::path_of(&s);

    server
        .inject_error(&json!({"path": path, "method": "GET", "count": 1, "injectSseEvent": {"eventType": "future-type", "data": "{\"v\":2}"}}))
        .unwrap();
    let mut chunks = s.read().live(LiveMode::Sse).bytes();
    let first = tokio::time::timeout(Duration::from_secs(5), chunks.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&first.data[..], b"test-data");
    drop(chunks);

    for bad in ["{invalid json here", ""] {
        server
            .inject_error(&json!({"path": path, "method": "GET", "count": 1, "injectSseEvent": {"eventType": "control", "data": bad}}))
            .unwrap();
        let mut chunks = s.read().live(LiveMode::Sse).bytes();
        let err = tokio::time::timeout(Duration::from_secs(5), chunks.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::Decode(DecodeKind::Sse),
            "{bad:?}: {err}"
        );
        assert!(chunks.next().await.is_none(), "an error ends the read");
    }
}

/// Connections are cut every 250 ms while a writer appends: each live mode
/// reconnects from the last delivered offset, losing and repeating nothing.
#[tokio::test]
async fn live_reads_resume_after_cut_connections_without_loss_or_duplicates() {
    for kind in test_servers::both() {
        let server = test_servers::TestServer::start(kind);
        let proxy = common::RecordingProxy::start_with_cut(
            server.base_url(),
            Some(Duration::from_millis(250)),
        )
        .await;
        let client = durable_streams_client::Client::builder()
            .retry_policy(
                RetryPolicy::default()
                    .max_retries(50)
                    .initial_delay(Duration::from_millis(5))
                    .max_delay(Duration::from_millis(50)),
            )
            .build()
            .unwrap();
        let direct = common::client();
        for mode in [LiveMode::LongPoll, LiveMode::Sse, LiveMode::Auto] {
            let name = server.unique_stream_url("cut");
            let writer = direct.stream(&name).unwrap();
            writer.create_with(CreateOptions::json()).await.unwrap();
            let reader = client
                .stream(name.replace(server.base_url(), &proxy.base_url))
                .unwrap();
            let handle =
                tokio::spawn(async move { reader.read().live(mode).collect_json::<u32>().await });
            for n in 0..60u32 {
                writer.append_json(&n).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            writer.close().await.unwrap();
            let got = tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(got, (0..60).collect::<Vec<u32>>(), "{mode:?} {kind:?}");
        }
        let lines = proxy.request_lines();
        let sse_connects = lines.iter().filter(|l| l.contains("live=sse")).count();
        assert!(
            sse_connects >= 3,
            "the proxy forced SSE reconnects ({sse_connects})"
        );
        let polls = lines
            .iter()
            .filter(|l| l.contains("live=long-poll"))
            .count();
        assert!(polls >= 3, "long-polls were made ({polls})");
    }
}
