//! What goes on the wire, seen through a recording proxy: static and dynamic
//! headers and parameters, parameter order, cursor echo, offset encoding,
//! conditional reads.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use durable_streams_client::{CreateOptions, LiveMode, Offset};
use futures::StreamExt;

#[tokio::test]
async fn dynamic_headers_and_params_are_computed_per_request() {
    for server in common::servers() {
        let proxy = common::RecordingProxy::start(server.base_url()).await;
        let client = common::client();
        let url = server
            .unique_stream_url("dyn")
            .replace(server.base_url(), &proxy.base_url);
        let calls = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&calls);
        let async_calls = Arc::new(AtomicU32::new(0));
        let async_counter = Arc::clone(&async_calls);
        let s = client
            .stream(&url)
            .unwrap()
            .with_header("x-static", "fixed")
            .with_header_fn("authorization", move || {
                format!("Bearer token-{}", counter.fetch_add(1, Ordering::SeqCst))
            })
            .with_param("zeta", "last")
            .with_param("alpha", "first")
            .with_param_async("tenant", move || {
                let n = async_counter.fetch_add(1, Ordering::SeqCst);
                async move { format!("t{n}") }
            });
        s.create_with(CreateOptions::new().content_type("text/plain"))
            .await
            .unwrap();
        s.append("a").await.unwrap();
        s.read_bytes().await.unwrap();
        s.head().await.unwrap();
        let seen = proxy.seen();
        for n in 0..4 {
            assert!(
                seen.contains(&format!("authorization: Bearer token-{n}")),
                "token-{n} missing:\n{seen}"
            );
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4,
            "one evaluation per request"
        );
        assert_eq!(async_calls.load(Ordering::SeqCst), 4);
        assert_eq!(seen.matches("x-static: fixed").count(), 4);
        assert!(seen.contains("durable-streams-client/"), "user agent");
        let get = proxy
            .request_lines()
            .into_iter()
            .find(|l| l.starts_with("GET "))
            .unwrap_or_else(|| panic!("{:?}", proxy.request_lines()));
        // Keys in lexicographic order (PROTOCOL.md 10.1).
        let query = get
            .split('?')
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_owned();
        let keys: Vec<&str> = query
            .split('&')
            .map(|kv| kv.split('=').next().unwrap())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "{get}");
        assert_eq!(keys, ["alpha", "offset", "tenant", "zeta"], "{get}");
    }
}

#[tokio::test]
async fn long_polls_echo_the_cursor_and_offsets_are_encoded() {
    for server in common::servers() {
        let proxy = common::RecordingProxy::start(server.base_url()).await;
        let client = common::client();
        let url = server
            .unique_stream_url("cursor")
            .replace(server.base_url(), &proxy.base_url);
        let s = client.stream(&url).unwrap().with_content_type("text/plain");
        s.create().await.unwrap();
        let mut chunks = s.read().live(LiveMode::LongPoll).bytes();
        let first = chunks.next().await.unwrap().unwrap();
        assert!(first.up_to_date);
        // Let at least two long-polls time out (server timeout 500 ms).
        let _ = tokio::time::timeout(Duration::from_millis(1300), chunks.next()).await;
        drop(chunks);
        let polls: Vec<String> = proxy
            .request_lines()
            .into_iter()
            .filter(|l| l.contains("live=long-poll"))
            .collect();
        assert!(polls.len() >= 2, "{polls:?}");
        // The first long-poll follows a catch-up response, which need not
        // carry a cursor; every later one echoes the last cursor.
        for poll in &polls[1..] {
            assert!(
                poll.contains("cursor="),
                "every long-poll echoes a cursor: {poll}"
            );
        }

        // Offsets are URL-encoded, never interpreted.
        let odd = Offset::parse("a+b:c%d").unwrap();
        let _ = s.read().offset(odd).collect_bytes().await;
        let line = proxy
            .request_lines()
            .into_iter()
            .rev()
            .find(|l| l.starts_with("GET "))
            .unwrap();
        assert!(line.contains("offset=a%2Bb%3Ac%25d"), "{line}");
    }
}

#[tokio::test]
async fn repeated_tail_reads_are_conditional() {
    for server in common::servers() {
        let proxy = common::RecordingProxy::start(server.base_url()).await;
        let client = common::client();
        let url = server
            .unique_stream_url("etag")
            .replace(server.base_url(), &proxy.base_url);
        let s = client.stream(&url).unwrap().with_content_type("text/plain");
        s.create().await.unwrap();
        let tail = s.append("x").await.unwrap().next_offset.unwrap();
        let first = s.read().offset(tail.clone()).collect_bytes().await.unwrap();
        assert!(first.is_empty());
        let second = s.read().offset(tail.clone()).collect_bytes().await.unwrap();
        assert!(second.is_empty(), "304 is 'nothing new', not an error");
        assert!(
            proxy.seen().to_ascii_lowercase().contains("if-none-match:"),
            "{:?}",
            server.kind()
        );
        // New data after the ETag was remembered is still delivered.
        s.append("y").await.unwrap();
        let third = s.read().offset(tail).collect_bytes().await.unwrap();
        assert_eq!(&third[..], b"y");
    }
}
