//! Live reads in every mode against both real servers: delivery, closure,
//! resumption, and the shapes (bytes, text, typed JSON).

mod common;

use std::time::Duration;

use durable_streams_client::{Chunk, CreateOptions, LiveMode, Offset, Stream};
use futures::StreamExt;
use serde_json::{Value, json};

const MODES: [LiveMode; 3] = [LiveMode::LongPoll, LiveMode::Sse, LiveMode::Auto];

async fn next_chunk(chunks: &mut durable_streams_client::ChunkStream) -> Chunk {
    tokio::time::timeout(Duration::from_secs(10), chunks.next())
        .await
        .expect("a chunk within 10 s")
        .expect("stream not ended")
        .expect("chunk ok")
}

/// Collect chunk data until a chunk satisfies `until`.
async fn read_until(
    chunks: &mut durable_streams_client::ChunkStream,
    until: impl Fn(&Chunk) -> bool,
) -> (Vec<u8>, Chunk) {
    let mut data = Vec::new();
    loop {
        let c = next_chunk(chunks).await;
        data.extend_from_slice(&c.data);
        if until(&c) {
            return (data, c);
        }
    }
}

#[tokio::test]
async fn live_reads_deliver_new_data_and_end_at_closure() {
    for server in common::servers() {
        for mode in MODES {
            let client = common::client();
            let s = common::stream(&server, &client, "live").with_content_type("text/plain");
            s.create().await.unwrap();
            s.append("history|").await.unwrap();
            let mut chunks = s.read().live(mode).bytes();
            let (data, c) = read_until(&mut chunks, |c| c.up_to_date).await;
            assert_eq!(data, b"history|", "{mode:?} {:?}", server.kind());
            assert!(!c.closed);

            // Live appends arrive without any new request from the caller.
            let writer = s.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                writer.append("live-1|").await.unwrap();
                writer.append("live-2|").await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
                writer.close().await.unwrap();
            });
            let (data, last) = read_until(&mut chunks, |c| c.closed).await;
            assert_eq!(data, b"live-1|live-2|", "{mode:?} {:?}", server.kind());
            assert!(last.closed && last.up_to_date);
            let end = tokio::time::timeout(Duration::from_secs(5), chunks.next())
                .await
                .unwrap();
            assert!(end.is_none(), "the read ends after closure ({mode:?})");
        }
    }
}

/// A client reading SSE in 1 KiB pieces still delivers every event whole,
/// events larger than the buffer included, in order, to the closure.
#[tokio::test]
async fn sse_with_a_small_read_buffer_delivers_large_events() {
    for server in common::servers() {
        let client = durable_streams_client::Client::builder()
            .sse_read_buffer(1024)
            .build()
            .unwrap();
        let s = common::stream(&server, &client, "sse-small").with_content_type("text/plain");
        s.create().await.unwrap();
        let mut chunks = s.read().live(LiveMode::Sse).bytes();
        let (data, _) = read_until(&mut chunks, |c| c.up_to_date).await;
        assert!(data.is_empty());
        let events: Vec<String> = (0..20)
            .map(|i| format!("<{i}:{}>", "e".repeat(i * 700)))
            .collect();
        let writer = s.clone();
        let sent = events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for event in sent {
                writer.append(event).await.unwrap();
            }
            writer.close().await.unwrap();
        });
        let (data, last) = read_until(&mut chunks, |c| c.closed).await;
        assert!(last.closed);
        assert!(
            data == events.concat().into_bytes(),
            "{:?}: the events differ",
            server.kind()
        );
    }
}

#[tokio::test]
async fn up_to_date_alone_does_not_end_a_live_read() {
    for server in common::servers() {
        for mode in MODES {
            let client = common::client();
            let s = common::stream(&server, &client, "uptodate").with_content_type("text/plain");
            s.create().await.unwrap();
            let mut chunks = s.read().live(mode).bytes();
            let first = next_chunk(&mut chunks).await;
            assert!(first.up_to_date && !first.closed);
            // Longer than the servers' 500 ms long-poll timeout: still open.
            let waited = tokio::time::timeout(Duration::from_millis(1300), chunks.next()).await;
            assert!(
                waited.is_err(),
                "no item while idle ({mode:?} {:?}): {waited:?}",
                server.kind()
            );
            s.append("late").await.unwrap();
            let (data, _) = read_until(&mut chunks, |c| !c.data.is_empty()).await;
            assert_eq!(data, b"late");
        }
    }
}

#[tokio::test]
async fn closed_streams_end_immediately_in_every_mode() {
    for server in common::servers() {
        let client = common::client();
        let s = common::stream(&server, &client, "closed").with_content_type("text/plain");
        s.create().await.unwrap();
        s.append("all").await.unwrap();
        s.close().await.unwrap();
        for mode in [
            LiveMode::Off,
            LiveMode::LongPoll,
            LiveMode::Sse,
            LiveMode::Auto,
        ] {
            let started = std::time::Instant::now();
            let chunks: Vec<_> = s.read().live(mode).bytes().collect().await;
            let chunks: Vec<Chunk> = chunks.into_iter().map(|c| c.unwrap()).collect();
            let data: Vec<u8> = chunks.iter().flat_map(|c| c.data.to_vec()).collect();
            assert_eq!(data, b"all", "{mode:?} {:?}", server.kind());
            assert!(chunks.last().unwrap().closed, "{mode:?}");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{mode:?} took {:?}",
                started.elapsed()
            );
            // From the tail of a closed stream, and from `now`.
            let tail = chunks.last().unwrap().offset.clone();
            for start in [tail, Offset::now()] {
                let rest: Vec<_> = s.read().offset(start).live(mode).bytes().collect().await;
                assert_eq!(rest.len(), 1, "{mode:?}");
                let only = rest.into_iter().next().unwrap().unwrap();
                assert!(only.closed && only.data.is_empty(), "{mode:?}");
            }
        }
    }
}

#[tokio::test]
async fn now_skips_history() {
    for server in common::servers() {
        for mode in MODES {
            let client = common::client();
            let s = common::stream(&server, &client, "now").with_content_type("text/plain");
            s.create().await.unwrap();
            s.append("old").await.unwrap();
            let mut chunks = s.read().offset(Offset::now()).live(mode).bytes();
            let writer = s.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                writer.append("new").await.unwrap();
            });
            let (data, _) = read_until(&mut chunks, |c| !c.data.is_empty()).await;
            assert_eq!(data, b"new", "{mode:?} {:?}", server.kind());
        }
    }
}

#[tokio::test]
async fn binary_streams_round_trip_over_sse_base64() {
    for server in common::servers() {
        let client = common::client();
        let s =
            common::stream(&server, &client, "bin").with_content_type("application/octet-stream");
        s.create().await.unwrap();
        let payload: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        s.append(payload.clone()).await.unwrap();
        s.close().await.unwrap();
        let got = s.read().live(LiveMode::Sse).collect_bytes().await.unwrap();
        assert_eq!(got.to_vec(), payload, "{:?}", server.kind());
    }
}

#[tokio::test]
async fn typed_json_in_every_mode() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Msg {
        n: u32,
    }
    for server in common::servers() {
        for mode in [
            LiveMode::Off,
            LiveMode::LongPoll,
            LiveMode::Sse,
            LiveMode::Auto,
        ] {
            let client = common::client();
            let s = common::stream(&server, &client, "typed");
            s.create_with(CreateOptions::json()).await.unwrap();
            s.append_json_batch((0..50).map(|n| json!({ "n": n })))
                .await
                .unwrap();
            s.append_json(&json!({"n": 50})).await.unwrap();
            if mode.is_live() {
                let writer = s.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    writer.append_json(&json!({"n": 51})).await.unwrap();
                    writer.close().await.unwrap();
                });
            }
            let mut batches = s.read().live(mode).json::<Msg>();
            let mut got = Vec::new();
            let mut last_offset = None;
            while let Some(batch) = tokio::time::timeout(Duration::from_secs(10), batches.next())
                .await
                .unwrap()
            {
                let batch = batch.unwrap();
                last_offset = Some(batch.offset.clone());
                got.extend(batch.items.into_iter().map(|m| m.n));
            }
            let expected: Vec<u32> = if mode.is_live() {
                (0..=51).collect()
            } else {
                (0..=50).collect()
            };
            assert_eq!(got, expected, "{mode:?} {:?}", server.kind());
            // The last batch's offset is the resume point: nothing after it.
            let rest: Vec<Value> = s
                .read()
                .offset(last_offset.unwrap())
                .collect_json()
                .await
                .unwrap();
            assert!(rest.is_empty());
        }
    }
}

#[tokio::test]
async fn text_reads_keep_multibyte_characters_whole() {
    for server in common::servers() {
        let client = common::client();
        let s =
            common::stream(&server, &client, "text").with_content_type("text/plain; charset=utf-8");
        s.create().await.unwrap();
        let euro = "€".as_bytes();
        // Split a three-byte character across two appends.
        s.append(vec![b'a', euro[0]]).await.unwrap();
        s.append(vec![euro[1], euro[2], b'b']).await.unwrap();
        s.close().await.unwrap();
        // Not SSE: for text/* streams SSE carries each message as text, and the
        // Node server decodes each append separately (a split character
        // becomes U+FFFD on the server side before it reaches any client).
        for mode in [LiveMode::Off, LiveMode::LongPoll] {
            let texts: Vec<String> = s
                .read()
                .live(mode)
                .text()
                .map(|t| t.unwrap().text)
                .collect()
                .await;
            assert_eq!(texts.concat(), "a€b", "{mode:?} {:?}", server.kind());
        }
    }
}

/// Many small appends while a live reader runs: each message exactly once, in order.
#[tokio::test]
async fn live_readers_see_every_message_once_in_order() {
    for server in common::servers() {
        for mode in MODES {
            let client = common::client();
            let s = common::stream(&server, &client, "order");
            s.create_with(CreateOptions::json()).await.unwrap();
            let reader = {
                let s: Stream = s.clone();
                tokio::spawn(async move { s.read().live(mode).collect_json::<u32>().await })
            };
            for n in 0..200u32 {
                s.append_json(&n).await.unwrap();
            }
            s.close().await.unwrap();
            let got = tokio::time::timeout(Duration::from_secs(20), reader)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(
                got,
                (0..200).collect::<Vec<_>>(),
                "{mode:?} {:?}",
                server.kind()
            );
        }
    }
}

/// Both servers answer a catch-up read with everything past the offset in
/// one response. A client whose limit is far below the stream's size still
/// reads it all, in bounded pieces, bytes and JSON alike.
#[tokio::test]
async fn responses_larger_than_the_limit_arrive_in_bounded_pieces() {
    const LIMIT: usize = 64 * 1024;
    for server in common::servers() {
        let writer = common::client();
        let small = durable_streams_client::Client::builder()
            .max_response_bytes(LIMIT)
            .build()
            .unwrap();
        let url = server.unique_stream_url("pieces");
        let w = writer.stream(&url).unwrap();
        w.create_with(CreateOptions::new().content_type("application/octet-stream"))
            .await
            .unwrap();
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        for part in data.chunks(500_000) {
            w.append(part.to_vec()).await.unwrap();
        }
        let mut chunks = small.stream(&url).unwrap().read().bytes();
        let mut got = Vec::new();
        let mut pieces = 0;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.data.len() <= LIMIT, "{} bytes", chunk.data.len());
            pieces += 1;
            got.extend_from_slice(&chunk.data);
        }
        assert_eq!(got.len(), data.len(), "{:?}", server.kind());
        assert!(got == data, "bytes differ ({:?})", server.kind());
        assert!(pieces >= data.len() / LIMIT, "{pieces} pieces");

        let json_url = server.unique_stream_url("pieces-json");
        let jw = writer.stream(&json_url).unwrap();
        jw.create_with(CreateOptions::json()).await.unwrap();
        for start in (0..20_000u32).step_by(5_000) {
            jw.append_json_batch(
                (start..start + 5_000).map(|i| json!({"i": i, "pad": "xxxxxxxxxxxxxxxx"})),
            )
            .await
            .unwrap();
        }
        let items: Vec<serde_json::Value> = small
            .stream(&json_url)
            .unwrap()
            .read()
            .collect_json()
            .await
            .unwrap();
        let order: Vec<u64> = items.iter().map(|v| v["i"].as_u64().unwrap()).collect();
        assert_eq!(
            order,
            (0..20_000).collect::<Vec<_>>(),
            "{:?}",
            server.kind()
        );
    }
}

/// A response whose connection breaks mid-body is requested again from the
/// same offset and the part already delivered is skipped: no loss, no
/// duplicates, even when most attempts break.
#[tokio::test]
async fn a_body_broken_midway_resumes_without_duplicates() {
    const LIMIT: usize = 32 * 1024;
    for server in common::servers() {
        let writer = common::client();
        let url_path = format!("/v1/stream/broken-{}", fastrand::u64(..));
        let w = writer
            .stream(format!("{}{url_path}", server.base_url()))
            .unwrap();
        w.create_with(CreateOptions::json()).await.unwrap();
        w.append_json_batch((0..100_000u32).map(|i| json!({"i": i})))
            .await
            .unwrap();
        // The first three answers are cut at 100, 300 and 600 KB of a body of
        // about 1.2 MB: each retry re-reads the response from its start (the
        // server gives no position inside it) and skips what was delivered.
        let proxy = common::RecordingProxy::start_cutting_answers(
            server.base_url(),
            vec![100_000, 300_000, 600_000],
        )
        .await;
        let reader = durable_streams_client::Client::builder()
            .max_response_bytes(LIMIT)
            .retry_policy(
                durable_streams_client::RetryPolicy::default()
                    .max_retries(50)
                    .initial_delay(std::time::Duration::from_millis(1))
                    .max_delay(std::time::Duration::from_millis(20)),
            )
            .build()
            .unwrap();
        let items: Vec<serde_json::Value> = reader
            .stream(format!("{}{url_path}", proxy.base_url))
            .unwrap()
            .read()
            .collect_json()
            .await
            .unwrap();
        let order: Vec<u64> = items.iter().map(|v| v["i"].as_u64().unwrap()).collect();
        assert_eq!(order.len(), 100_000, "{:?}", server.kind());
        assert!(
            order.iter().copied().eq(0..100_000),
            "out of order or duplicated"
        );
        let gets = proxy
            .request_lines()
            .iter()
            .filter(|l| l.starts_with("GET"))
            .count();
        assert_eq!(
            gets,
            4,
            "{:?}: three cut answers, then a whole one",
            server.kind()
        );
    }
}
