//! Read guards against the real servers: messages that look empty (`[]`,
//! `{}`, `[[]]`) are delivered in every mode, exact resume positions, and a
//! healthy long-poll is neither slowed down nor multiplied by the
//! no-progress guard.

mod common;

use std::time::{Duration, Instant};

use durable_streams_client::{Client, CreateOptions, LiveMode, Offset};
use futures::StreamExt;
use serde_json::{Value, json};
use test_servers::{ServerOptions, TestServer};

const ALL_MODES: [LiveMode; 4] = [
    LiveMode::Off,
    LiveMode::LongPoll,
    LiveMode::Sse,
    LiveMode::Auto,
];

fn empty_looking() -> Vec<Value> {
    vec![json!([]), json!({}), json!([[]]), json!(1), json!([[[]]])]
}

#[tokio::test]
async fn empty_looking_json_messages_are_delivered_in_every_mode() {
    for server in common::servers() {
        let client = common::client();
        let s = common::stream(&server, &client, "empty-json");
        s.create_with(CreateOptions::json()).await.unwrap();
        // One append per message: each response/event may hold just one.
        for v in empty_looking() {
            s.append_json(&v).await.unwrap();
        }
        s.append_json_batch(empty_looking()).await.unwrap();
        s.close().await.unwrap();
        let mut expected = empty_looking();
        expected.extend(empty_looking());
        for mode in ALL_MODES {
            let got: Vec<Value> = s.read().live(mode).collect_json().await.unwrap();
            assert_eq!(got, expected, "{mode:?} {:?}", server.kind());
        }
    }
}

#[tokio::test]
async fn an_empty_array_message_arriving_live_is_delivered_and_moves_the_offset() {
    for server in common::servers() {
        for mode in [LiveMode::LongPoll, LiveMode::Sse, LiveMode::Auto] {
            let client = common::client();
            let s = common::stream(&server, &client, "live-empty-json");
            s.create_with(CreateOptions::json()).await.unwrap();
            let mut batches = s.read().live(mode).json::<Value>();
            let first = tokio::time::timeout(Duration::from_secs(10), batches.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert!(first.up_to_date && first.items.is_empty());
            let start = first.offset.clone();
            s.append_json(&json!([])).await.unwrap();
            let batch = loop {
                let b = tokio::time::timeout(Duration::from_secs(10), batches.next())
                    .await
                    .expect("the message within 10 s")
                    .unwrap()
                    .unwrap();
                if !b.items.is_empty() {
                    break b;
                }
            };
            assert_eq!(batch.items, vec![json!([])], "{mode:?} {:?}", server.kind());
            assert!(batch.exact);
            assert!(batch.offset > start, "{mode:?}: the offset moved past it");
        }
    }
}

#[tokio::test]
async fn only_the_last_piece_of_a_large_response_has_an_exact_offset() {
    const LIMIT: usize = 64 * 1024;
    for server in common::servers() {
        let writer = common::client();
        let small = Client::builder().max_response_bytes(LIMIT).build().unwrap();
        let url = server.unique_stream_url("exact");
        let w = writer.stream(&url).unwrap();
        w.create_with(CreateOptions::new().content_type("application/octet-stream"))
            .await
            .unwrap();
        w.append(vec![7u8; 300_000]).await.unwrap();
        let tail = w.head().await.unwrap().next_offset;
        let mut chunks = small.stream(&url).unwrap().read().bytes();
        let mut seen = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.unwrap();
            seen.push((chunk.exact, chunk.offset.clone(), chunk.data.len()));
        }
        assert!(seen.len() >= 4, "{seen:?}");
        let (last_exact, last_offset, _) = seen.last().unwrap().clone();
        assert!(last_exact && last_offset == tail, "{:?}", server.kind());
        for (exact, offset, len) in &seen[..seen.len() - 1] {
            assert!(
                !*exact && *offset == Offset::start(),
                "a middle piece ({len} bytes) claims {offset} (exact: {exact})"
            );
        }

        // Text reads carry the flag too.
        let mut texts = small.stream(&url).unwrap().read().text();
        let mut exact_count = 0;
        while let Some(c) = texts.next().await {
            exact_count += usize::from(c.unwrap().exact);
        }
        assert_eq!(exact_count, 1);
    }
}

#[tokio::test]
async fn a_healthy_long_poll_is_not_slowed_or_multiplied() {
    const HOLD_MS: u64 = 1500;
    for kind in test_servers::both() {
        let server = TestServer::start_with(
            kind,
            ServerOptions {
                long_poll_timeout_ms: HOLD_MS,
                ..ServerOptions::default()
            },
        );
        let client = common::client();
        let s = common::stream(&server, &client, "healthy-lp").with_content_type("text/plain");
        s.create().await.unwrap();
        s.append("history").await.unwrap();
        let proxy = common::RecordingProxy::start(server.base_url()).await;
        let reader = client
            .stream(s.url().as_str().replace(server.base_url(), &proxy.base_url))
            .unwrap();
        let mut chunks = reader
            .read()
            .offset(Offset::now())
            .live(LiveMode::LongPoll)
            .bytes();
        let writer = s.clone();
        let appended_at = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            writer.append("live").await.unwrap();
            Instant::now()
        });
        let started = Instant::now();
        let chunk = loop {
            let c = tokio::time::timeout(Duration::from_secs(15), chunks.next())
                .await
                .expect("data within 15 s")
                .unwrap()
                .unwrap();
            if !c.data.is_empty() {
                break c;
            }
        };
        let received = Instant::now();
        let appended_at = appended_at.await.unwrap();
        assert_eq!(&chunk.data[..], b"live");
        assert!(
            received.duration_since(appended_at) < Duration::from_millis(700),
            "delivered {:?} after the append ({:?})",
            received.duration_since(appended_at),
            kind
        );
        let polls = proxy
            .request_lines()
            .iter()
            .filter(|l| l.contains("live=long-poll"))
            .count();
        let held = started.elapsed().as_millis() as u64;
        // About one request per hold period (plus the one that got the data).
        let expected = (held / HOLD_MS + 2) as usize;
        assert!(
            polls <= expected,
            "{polls} long-polls in {held} ms with a {HOLD_MS} ms hold ({kind:?})"
        );
        assert!(
            proxy.request_lines().iter().all(|l| !l.contains("_nc=")),
            "no cache buster on a healthy long-poll"
        );
    }
}

#[tokio::test]
async fn sse_connections_cut_after_their_first_event_back_off_and_end_or_fall_back() {
    for server in common::servers() {
        let client = common::client();
        let s = common::stream(&server, &client, "sse-cut").with_content_type("text/plain");
        s.create().await.unwrap();
        s.append("history").await.unwrap();
        // Every connection is cut 30 ms after it opened: right after the
        // first control event of an up-to-date SSE read.
        let proxy = common::RecordingProxy::start_with_cut(
            server.base_url(),
            Some(Duration::from_millis(30)),
        )
        .await;
        let url = s.url().as_str().replace(server.base_url(), &proxy.base_url);
        let tail = s.head().await.unwrap().next_offset;

        // SSE: backed off, then NoProgress after the bound.
        let started = Instant::now();
        let mut chunks = client
            .stream(&url)
            .unwrap()
            .read()
            .offset(tail.clone())
            .live(LiveMode::Sse)
            .max_no_progress(6)
            .bytes();
        let err = loop {
            let next = tokio::time::timeout(Duration::from_secs(20), chunks.next()).await;
            let Ok(next) = next else {
                panic!(
                    "no end within 20 s ({:?}): {:?}",
                    server.kind(),
                    proxy.request_lines()
                );
            };
            match next {
                Some(Ok(_)) => {}
                Some(Err(e)) => break e,
                None => panic!("ended without an error"),
            }
        };
        assert_eq!(
            err.kind(),
            &durable_streams_client::ErrorKind::NoProgress { attempts: 6 },
            "{err} ({:?})",
            server.kind()
        );
        let sse: Vec<String> = proxy
            .request_lines()
            .into_iter()
            .filter(|l| l.contains("live=sse"))
            .collect();
        assert!(sse.len() <= 7, "{} SSE connections: {sse:?}", sse.len());
        assert!(sse[1..].iter().all(|l| l.contains("_nc=")), "{sse:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "backed off"
        );

        // Auto: three short connections, then long-poll.
        let before = proxy.request_lines().len();
        let mut chunks = client
            .stream(&url)
            .unwrap()
            .read()
            .offset(tail.clone())
            .live(LiveMode::Auto)
            .bytes();
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while let Some(Ok(_)) = chunks.next().await {}
        })
        .await;
        drop(chunks);
        let lines: Vec<String> = proxy.request_lines().into_iter().skip(before).collect();
        let sse = lines.iter().filter(|l| l.contains("live=sse")).count();
        let polls = lines
            .iter()
            .filter(|l| l.contains("live=long-poll"))
            .count();
        assert_eq!(sse, 3, "{lines:?}");
        assert!(polls >= 1, "fell back to long-poll: {lines:?}");
        assert!(lines.len() < 40, "no hot loop: {} requests", lines.len());
    }
}

/// Live reads ride out an outage far longer than the client's retry budget
/// (5 retries, at most 200 ms apart: about 1 s) and resume from the last
/// delivered offset: nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reads_ride_out_a_crash_and_an_outage() {
    if !test_servers::ServerKind::Rust.is_available() {
        return;
    }
    for mode in [LiveMode::LongPoll, LiveMode::Sse] {
        let mut server = TestServer::start(test_servers::ServerKind::Rust);
        let client = common::client();
        let s = common::stream(&server, &client, "outage").with_content_type("text/plain");
        s.create().await.unwrap();
        s.append("before|").await.unwrap();
        let mut chunks = s.read().live(mode).bytes();
        let mut got = Vec::new();
        loop {
            let c = tokio::time::timeout(Duration::from_secs(10), chunks.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            got.extend_from_slice(&c.data);
            if c.up_to_date {
                break;
            }
        }
        let reader = tokio::spawn(async move {
            let mut got = got;
            while let Some(c) = chunks.next().await {
                let c = c.expect("no error during the outage");
                got.extend_from_slice(&c.data);
                if c.closed {
                    break;
                }
            }
            got
        });
        server.kill().unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        server.restart().unwrap();
        s.append("after|").await.unwrap();
        s.close().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .expect("the read resumes after the outage")
            .unwrap();
        assert_eq!(got, b"before|after|", "{mode:?}");
    }
}
