//! One read shared by many subscribers (`ReadBuilder::shared`) against both
//! real servers: one connection for all, every subscriber gets every byte
//! once, a subscriber that falls behind the ring continues alone without
//! loss or repeats (also inside a large catch-up response, for bytes and
//! JSON), the read stops with its last subscriber and restarts where it
//! stopped, an error reaches every subscriber, typed and text subscribers
//! decode for themselves, and a proxy cutting connections costs nothing.

mod common;

use std::time::Duration;

use durable_streams_client::{ChunkStream, ErrorKind, LiveMode, Offset, Stream};
use futures::StreamExt;
use test_servers::TestServer;

/// Everything a subscriber delivers until its end, and whether every item
/// was data in order without an error.
async fn drain(mut chunks: ChunkStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut closed = false;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.expect("chunk");
        out.extend_from_slice(&chunk.data);
        closed = chunk.closed;
    }
    (out, closed)
}

/// A handle on the same stream through `proxy`.
fn via(proxy: &common::RecordingProxy, server_base: &str, s: &Stream) -> Stream {
    common::client()
        .stream(s.url().as_str().replace(server_base, &proxy.base_url))
        .unwrap()
        .with_content_type("text/plain")
}

/// A fresh text stream, and a handle on it through `proxy` (which sees
/// every request of the reads made with that handle).
async fn text_stream_behind(
    server: &TestServer,
    prefix: &str,
    proxy: &common::RecordingProxy,
) -> (Stream, Stream) {
    let s = common::stream(server, &common::client(), prefix).with_content_type("text/plain");
    s.create().await.unwrap();
    let reader = via(proxy, server.base_url(), &s);
    (s, reader)
}

fn sse_requests(proxy: &common::RecordingProxy) -> usize {
    proxy
        .request_lines()
        .iter()
        .filter(|l| l.starts_with("GET ") && l.contains("live=sse"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscribers_share_one_sse_connection_and_get_every_byte_once() {
    for server in common::servers() {
        let proxy = common::RecordingProxy::start(server.base_url()).await;
        let (s, reader) = text_stream_behind(&server, "shared-sse", &proxy).await;
        s.append("before-").await.unwrap();
        let tail = s.head().await.unwrap().next_offset;
        let shared = reader
            .read()
            .offset(tail.clone())
            .live(LiveMode::Sse)
            .shared(64)
            .unwrap();
        assert_eq!(shared.position(), tail);
        let tasks: Vec<_> = (0..50)
            .map(|_| tokio::spawn(drain(shared.subscribe())))
            .collect();
        let mut expected = Vec::new();
        for i in 0..20 {
            let body = format!("m{i};");
            expected.extend_from_slice(body.as_bytes());
            s.append(body).await.unwrap();
        }
        s.close().await.unwrap();
        for task in tasks {
            let (data, closed) = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("subscriber ends after the close")
                .unwrap();
            assert_eq!(data, expected, "{:?}", server.kind());
            assert!(closed, "the last chunk is the closing one");
        }
        assert_eq!(sse_requests(&proxy), 1, "{:?}", proxy.request_lines());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_behind_the_ring_continues_alone_without_loss_or_repeats() {
    for server in common::servers() {
        let proxy = common::RecordingProxy::start(server.base_url()).await;
        let (s, reader) = text_stream_behind(&server, "shared-lag", &proxy).await;
        let shared = reader.read().live(LiveMode::Sse).shared(2).unwrap();
        let fast = tokio::spawn(drain(shared.subscribe()));
        // Not polled while the appends go by: it falls behind the ring.
        let slow = shared.subscribe();
        let mut expected = Vec::new();
        for i in 0..30 {
            let body = format!("event-{i};");
            expected.extend_from_slice(body.as_bytes());
            s.append(body).await.unwrap();
            // One SSE event each, so the ring of 2 overflows.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        s.close().await.unwrap();
        let (fast_data, _) = fast.await.unwrap();
        assert_eq!(fast_data, expected, "{:?}", server.kind());
        let (slow_data, closed) = tokio::time::timeout(Duration::from_secs(30), drain(slow))
            .await
            .unwrap();
        assert_eq!(slow_data, expected, "{:?}", server.kind());
        assert!(closed);
        assert_eq!(
            sse_requests(&proxy),
            2,
            "the slow subscriber opened its own connection: {:?}",
            proxy.request_lines()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falling_behind_inside_a_large_response_skips_exactly_what_was_delivered() {
    for server in common::servers() {
        for json in [false, true] {
            let client = common::client();
            let content_type = if json {
                "application/json"
            } else {
                "text/plain"
            };
            let s =
                common::stream(&server, &client, "shared-large").with_content_type(content_type);
            s.create().await.unwrap();
            // About 3 MiB: a catch-up response the read hands out in pieces.
            let mut expected_messages = Vec::new();
            let mut expected_bytes = Vec::new();
            for batch in 0..6 {
                let messages: Vec<String> = (0..1000)
                    .map(|i| format!("{batch:02}-{i:04}-{}", "x".repeat(500)))
                    .collect();
                if json {
                    s.append_json_batch(&messages).await.unwrap();
                } else {
                    let body = messages.concat();
                    expected_bytes.extend_from_slice(body.as_bytes());
                    s.append(body).await.unwrap();
                }
                expected_messages.extend(messages);
            }
            let shared = s
                .read()
                .offset(Offset::start())
                .live(LiveMode::Off)
                .shared(1)
                .unwrap();
            let mut slow = shared.subscribe();
            let fast = tokio::spawn(drain(shared.subscribe()));
            // The slow one takes its first piece from the ring, then lags.
            let first = slow.next().await.unwrap().unwrap();
            assert!(!first.exact, "the first piece is inside the response");
            fast.await.unwrap();
            let mut got = vec![first];
            while let Some(chunk) = slow.next().await {
                got.push(chunk.unwrap());
            }
            if json {
                let mut messages: Vec<String> = Vec::new();
                for chunk in &got {
                    if !chunk.data.is_empty() {
                        messages
                            .extend(serde_json::from_slice::<Vec<String>>(&chunk.data).unwrap());
                    }
                }
                assert_eq!(
                    messages.len(),
                    expected_messages.len(),
                    "{:?}",
                    server.kind()
                );
                assert_eq!(messages, expected_messages, "{:?}", server.kind());
            } else {
                let data: Vec<u8> = got.iter().flat_map(|c| c.data.to_vec()).collect();
                assert_eq!(data.len(), expected_bytes.len(), "{:?}", server.kind());
                assert!(data == expected_bytes, "{:?}: bytes differ", server.kind());
            }
            assert!(got.last().unwrap().exact);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_stops_with_its_last_subscriber_and_restarts_where_it_stopped() {
    for server in common::servers() {
        let proxy = common::RecordingProxy::start(server.base_url()).await;
        let (s, reader) = text_stream_behind(&server, "shared-restart", &proxy).await;
        let shared = reader.read().live(LiveMode::Sse).shared(16).unwrap();
        let mut first = shared.subscribe();
        s.append("one;").await.unwrap();
        let mut got = Vec::new();
        while got != b"one;" {
            got.extend_from_slice(&first.next().await.unwrap().unwrap().data);
        }
        drop(first);
        let stopped_at = shared.position();
        // Written while nobody subscribes: the restarted read delivers it.
        s.append("two;").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let second = shared.subscribe();
        s.append("three;").await.unwrap();
        s.close().await.unwrap();
        let (data, closed) = tokio::time::timeout(Duration::from_secs(30), drain(second))
            .await
            .unwrap();
        assert_eq!(data, b"two;three;", "{:?}", server.kind());
        assert!(closed);
        assert_eq!(sse_requests(&proxy), 2, "{:?}", proxy.request_lines());
        let restarted = proxy
            .request_lines()
            .into_iter()
            .filter(|l| l.contains("live=sse"))
            .nth(1)
            .unwrap();
        assert!(
            restarted.contains(&format!("offset={}", stopped_at.as_str())),
            "{restarted}"
        );
    }
}

#[tokio::test]
async fn an_error_reaches_every_subscriber() {
    for server in common::servers() {
        let client = common::client();
        let missing = common::stream(&server, &client, "shared-missing");
        let shared = missing.read().live(LiveMode::Sse).shared(4).unwrap();
        let subscribers: Vec<_> = (0..3).map(|_| shared.subscribe()).collect();
        for mut sub in subscribers {
            let err = sub.next().await.unwrap().unwrap_err();
            assert_eq!(err.kind(), &ErrorKind::NotFound, "{:?}", server.kind());
            assert!(sub.next().await.is_none());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_and_text_subscribers_decode_for_themselves() {
    for server in common::servers() {
        let client = common::client();
        let s =
            common::stream(&server, &client, "shared-json").with_content_type("application/json");
        s.create().await.unwrap();
        let shared = s.read().live(LiveMode::Sse).shared(8).unwrap();
        let typed: Vec<_> = (0..3)
            .map(|_| {
                let mut batches = shared.subscribe_json::<serde_json::Value>();
                tokio::spawn(async move {
                    let mut values = Vec::new();
                    while let Some(batch) = batches.next().await {
                        values.extend(batch.unwrap().items);
                    }
                    values
                })
            })
            .collect();
        let mut text = shared.subscribe_text();
        let expected: Vec<serde_json::Value> = (0..10)
            .map(|i| serde_json::json!({"n": i, "s": "é"}))
            .collect();
        for v in &expected {
            s.append_json(v).await.unwrap();
        }
        s.close().await.unwrap();
        for task in typed {
            assert_eq!(task.await.unwrap(), expected, "{:?}", server.kind());
        }
        let mut seen = String::new();
        while let Some(chunk) = text.next().await {
            seen.push_str(&chunk.unwrap().text);
        }
        assert_eq!(seen.matches('é').count(), 10, "{seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_read_through_a_proxy_that_cuts_connections_loses_and_repeats_nothing() {
    for server in common::servers() {
        // Every connection is cut after 150 ms: the shared read reconnects
        // from its last offset many times while appends keep coming.
        let proxy = common::RecordingProxy::start_with_cut(
            server.base_url(),
            Some(Duration::from_millis(150)),
        )
        .await;
        let (s, reader) = text_stream_behind(&server, "shared-cut", &proxy).await;
        let shared = reader.read().live(LiveMode::Sse).shared(4).unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|_| tokio::spawn(drain(shared.subscribe())))
            .collect();
        let mut expected = Vec::new();
        for i in 0..60 {
            let body = format!("cut-{i};");
            expected.extend_from_slice(body.as_bytes());
            s.append(body).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        s.close().await.unwrap();
        for task in tasks {
            let (data, closed) = tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("subscriber ends after the close")
                .unwrap();
            assert!(
                data == expected,
                "{:?}: {}",
                server.kind(),
                String::from_utf8_lossy(&data)
            );
            assert!(closed);
        }
        assert!(
            sse_requests(&proxy) >= 3,
            "the proxy cut the shared read several times: {:?}",
            proxy.request_lines()
        );
    }
}
