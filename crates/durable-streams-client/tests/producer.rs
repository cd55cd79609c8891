//! The idempotent producer against both real servers, and exactly-once
//! delivery under faults (the reference server's fault injection plus a
//! proxy that drops answers after the server applied the write).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_streams_client::{
    Client, CreateOptions, ErrorKind, ForkOptions, Offset, Producer, RetryPolicy, Stream,
};
use serde_json::json;
use test_servers::{ServerKind, TestServer};

async fn json_stream(server: &test_servers::TestServer, client: &Client, prefix: &str) -> Stream {
    let s = common::stream(server, client, prefix);
    s.create_with(CreateOptions::json()).await.unwrap();
    s
}

/// A new text stream, and a producer on it (`p-<prefix>`) with small
/// batches and a small buffer budget, so that tests cross both.
async fn text_stream_producer(
    server: &TestServer,
    client: &Client,
    prefix: &str,
    batch_bytes: usize,
    buffered_bytes: usize,
) -> (Stream, Producer) {
    let s = common::stream(server, client, prefix).with_content_type("text/plain");
    s.create().await.unwrap();
    let producer = Producer::builder(&s, format!("p-{prefix}"))
        .max_batch_bytes(batch_bytes)
        .max_buffered_bytes(buffered_bytes)
        .build()
        .unwrap();
    (s, producer)
}

fn numbers(s: &[serde_json::Value]) -> Vec<u64> {
    s.iter().map(|v| v.as_u64().expect("a number")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_arrive_in_order() {
    for server in common::servers() {
        let client = common::client();
        let s = json_stream(&server, &client, "order").await;
        let producer = Producer::builder(&s, "p-order")
            .max_batch_items(7)
            .max_in_flight(5)
            .linger(Duration::ZERO)
            .build()
            .unwrap();
        for i in 0..5_000u64 {
            producer.append_json(&i).unwrap();
        }
        producer.close().await.unwrap();
        assert!(producer.next_seq() > 700, "{:?}", producer);
        let back = numbers(&s.read_json::<serde_json::Value>().await.unwrap());
        assert_eq!(back, (0..5_000).collect::<Vec<_>>(), "{:?}", server.kind());
    }
}

/// `send_many` appends in order, waits for buffer room when the budget is
/// smaller than the messages (the slow path), and its ack resolves once
/// the last message is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_many_appends_in_order_with_backpressure() {
    for server in common::servers() {
        let client = common::client();
        let (s, producer) = text_stream_producer(&server, &client, "many", 4 << 10, 16 << 10).await;
        let lines: Vec<String> = (0..10_000).map(|i| format!("{i:05}\n")).collect();
        let receipt = producer
            .send_many(lines.iter().map(|l| bytes::Bytes::from(l.clone())))
            .await
            .unwrap()
            .await
            .unwrap();
        let tail = s.head().await.unwrap().next_offset;
        assert_eq!(
            receipt.offset,
            Some(tail),
            "the last message is stored when the ack resolves"
        );
        assert_eq!(
            s.read_text().await.unwrap(),
            lines.concat(),
            "{:?}",
            server.kind()
        );
        let empty: Vec<bytes::Bytes> = Vec::new();
        let err = producer.send_many(empty).await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::InvalidArgument { .. }),
            "{err}"
        );
        producer.close().await.unwrap();
    }
}

/// `feed` waits for room like `send` but returns no acknowledgement: every
/// message still arrives once and in order, the buffer bound holds, and a
/// failure is not lost: `flush` reports it and later feeds fail with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_applies_backpressure_and_reports_failures_at_flush() {
    for server in common::servers() {
        let client = common::client();
        let (s, producer) = text_stream_producer(&server, &client, "feed", 2 << 10, 8 << 10).await;
        let mut expected = String::new();
        let mut buffer = Vec::new();
        for i in 0..6_000 {
            let line = format!("{i:05}\n");
            expected.push_str(&line);
            if i % 2 == 0 {
                producer.feed(line).await.unwrap();
            } else {
                buffer.clear();
                buffer.extend_from_slice(line.as_bytes());
                producer.feed_slice(&buffer).await.unwrap();
            }
            assert!(producer.buffered_bytes() <= 8 << 10);
        }
        producer.flush().await.unwrap();
        assert_eq!(producer.buffered_bytes(), 0);
        assert_eq!(
            s.read_text().await.unwrap(),
            expected,
            "{:?}",
            server.kind()
        );

        // Another writer closes the stream: the fed message fails, flush
        // says so, and the next feed fails with the same error.
        s.close().await.unwrap();
        producer.feed("late\n").await.unwrap();
        let err = producer.flush().await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::StreamClosed { .. }),
            "{:?}: {err}",
            server.kind()
        );
        let again = producer.feed("later\n").await.unwrap_err();
        assert!(
            matches!(again.kind(), ErrorKind::StreamClosed { .. }),
            "{again}"
        );
        assert_eq!(
            s.read_text().await.unwrap(),
            expected,
            "nothing after the close"
        );

        let j = json_stream(&server, &client, "feed-json").await;
        let producer = Producer::builder(&j, "p-feed-json").build().unwrap();
        for i in 0..100 {
            producer.feed_json(&i).await.unwrap();
        }
        producer.close().await.unwrap();
        assert_eq!(
            numbers(&j.read_json().await.unwrap()),
            (0..100).collect::<Vec<u64>>()
        );
    }
}

/// A writer streams from one task through a batch of its own: under a
/// small buffer budget (it waits for room, handing over what it holds),
/// every message arrives once and in order; appends made before a
/// hand-over go first; invalid messages are refused without writing them;
/// a dropped writer hands its messages over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_streams_in_order_under_backpressure_and_hands_over_on_drop() {
    for server in common::servers() {
        let client = common::client();
        let (s, producer) =
            text_stream_producer(&server, &client, "writer", 4 << 10, 16 << 10).await;
        producer.append("first\n").unwrap();
        let mut expected = String::from("first\n");
        let mut writer = producer.writer();
        for i in 0..20_000 {
            let line = format!("{i:05}\n");
            writer.write(line.as_bytes()).await.unwrap();
            expected.push_str(&line);
            assert!(producer.buffered_bytes() <= 16 << 10);
        }
        let err = writer.write(b"").await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::InvalidArgument { .. }),
            "{err}"
        );
        writer.flush().await.unwrap();
        assert_eq!(writer.buffered_bytes(), 0);
        // Written, not handed over, then an append, then the drop: the
        // append goes first (a writer's messages take their place when
        // handed over).
        writer.write(b"kept\n").await.unwrap();
        producer.append("between\n").unwrap();
        drop(writer);
        expected.push_str("between\nkept\n");
        producer.close().await.unwrap();
        assert_eq!(
            s.read_text().await.unwrap(),
            expected,
            "{:?}",
            server.kind()
        );

        let j = json_stream(&server, &client, "writer-json").await;
        let producer = Producer::builder(&j, "p-writer-json").build().unwrap();
        let mut writer = producer.writer();
        for i in 0..1_000u64 {
            writer.write_json(&i).await.unwrap();
        }
        writer.write(b"1000").await.unwrap();
        let err = writer.write(b"{not json").await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::InvalidArgument { .. }),
            "{err}"
        );
        writer.flush().await.unwrap();
        producer.close().await.unwrap();
        assert_eq!(
            numbers(&j.read_json().await.unwrap()),
            (0..=1_000).collect::<Vec<u64>>()
        );
    }
}

/// A writer dropped with messages the producer no longer accepts hands them
/// to `on_error`: never dropped silently.
#[tokio::test]
async fn a_writer_dropped_after_close_hands_its_messages_to_on_error() {
    let server = common::node();
    let client = common::client();
    let s = common::stream(&server, &client, "writer-late").with_content_type("text/plain");
    s.create().await.unwrap();
    let failed = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&failed);
    let producer = Producer::builder(&s, "p-writer-late")
        .on_error(move |f| sink.lock().unwrap().push(f))
        .build()
        .unwrap();
    let mut writer = producer.writer();
    writer.write(b"a").await.unwrap();
    writer.write(b"b").await.unwrap();
    producer.close().await.unwrap();
    let err = writer.submit().unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::ProducerClosed);
    assert_eq!(writer.buffered_bytes(), 2, "kept after a failed hand-over");
    drop(writer);
    let failed = std::mem::take(&mut *failed.lock().unwrap());
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].messages, 2);
    assert_eq!(&failed[0].body[..], b"ab");
    assert_eq!(failed[0].error.kind(), &ErrorKind::ProducerClosed);
    assert_eq!(s.read_text().await.unwrap(), "");
}

/// An invalid message stops `send_many` with its error; the messages
/// before it (in the same run) are appended, the ones after it are not.
#[tokio::test]
async fn send_many_stops_at_an_invalid_message() {
    for server in common::servers() {
        let client = common::client();
        let s = json_stream(&server, &client, "many-bad").await;
        let producer = Producer::builder(&s, "p-many-bad").build().unwrap();
        let messages = [&b"1"[..], b"2", b"{", b"3"].map(bytes::Bytes::from_static);
        let err = producer.send_many(messages).await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::InvalidArgument { field: "data" }),
            "{err}"
        );
        producer.close().await.unwrap();
        let back = s.read_json::<serde_json::Value>().await.unwrap();
        assert_eq!(back, vec![json!(1), json!(2)], "{}", server.kind());
    }
}

/// `send_slice` and `append_slice` copy from a buffer the caller reuses:
/// every message arrives as it was when sent, including one larger than a
/// batch (sent as a body of its own), and JSON streams still check that a
/// slice is one JSON value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_from_a_reused_buffer_arrive_as_sent() {
    for server in common::servers() {
        let client = common::client();
        let (s, producer) =
            text_stream_producer(&server, &client, "slices", 8 << 10, 64 << 10).await;
        let mut expected = Vec::new();
        let mut buffer = Vec::new();
        for i in 0..5_000 {
            buffer.clear();
            buffer.extend_from_slice(format!("{i:05};").as_bytes());
            expected.extend_from_slice(&buffer);
            if i % 2 == 0 {
                drop(producer.send_slice(&buffer).await.unwrap());
            } else if producer.append_slice(&buffer).is_err() {
                // Buffer full: wait for room like `send`.
                drop(producer.send_slice(&buffer).await.unwrap());
            }
        }
        // Larger than a batch: a body of its own.
        buffer.clear();
        buffer.resize(20 << 10, b'z');
        expected.extend_from_slice(&buffer);
        let receipt = producer.send_slice(&buffer).await.unwrap().await.unwrap();
        assert_eq!(receipt.offset, Some(s.head().await.unwrap().next_offset));
        producer.close().await.unwrap();
        assert!(
            s.read_bytes().await.unwrap() == expected,
            "{:?}: bytes differ",
            server.kind()
        );

        let j = json_stream(&server, &client, "slices-json").await;
        let producer = Producer::builder(&j, "p-slices-json").build().unwrap();
        producer.append_slice(br#"{"a":1}"#).unwrap();
        let err = producer.send_slice(b"{not json").await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::InvalidArgument { .. }),
            "{err}"
        );
        producer.close().await.unwrap();
        assert_eq!(
            j.read_json::<serde_json::Value>().await.unwrap(),
            vec![json!({"a": 1})]
        );
    }
}

#[tokio::test]
async fn byte_streams_concatenate_and_receipts_report_offsets() {
    for server in common::servers() {
        let client = common::client();
        let s = common::stream(&server, &client, "bytes").with_content_type("text/plain");
        s.create().await.unwrap();
        let producer = Producer::builder(&s, "p-bytes").build().unwrap();
        producer.append("a").unwrap();
        let ack = producer.send("b").await.unwrap();
        let receipt = ack.await.unwrap();
        assert!(!receipt.duplicate);
        assert_eq!(receipt.epoch, producer.epoch());
        let tail = s.head().await.unwrap().next_offset;
        assert_eq!(receipt.offset, Some(tail));
        let second = producer.send("c").await.unwrap().await.unwrap();
        assert_eq!(second.seq, receipt.seq + 1);
        producer.close().await.unwrap();
        assert_eq!(s.read_text().await.unwrap(), "abc", "{:?}", server.kind());
    }
}

#[tokio::test]
async fn same_id_and_epoch_is_a_collision_not_a_duplicate() {
    for server in common::servers() {
        let client = common::client();
        let s = json_stream(&server, &client, "dup").await;
        let first = Producer::builder(&s, "p-dup").epoch(0).build().unwrap();
        let r = first.send_json(&1).await.unwrap().await.unwrap();
        assert!(!r.duplicate);
        first.send_json(&2).await.unwrap().await.unwrap();
        first.close().await.unwrap();
        // A second instance with the same id and epoch repeats seq 0, which
        // the server takes for a retry of the first one's batch: that is
        // never reported as written.
        let second = Producer::builder(&s, "p-dup").epoch(0).build().unwrap();
        let err = second.send_json(&10).await.unwrap().await.unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::ProducerIdCollision { epoch: 0, seq: 0 },
            "{:?}",
            server.kind()
        );
        assert!(err.to_string().contains("auto_claim"), "{err}");
        assert!(matches!(
            second.close().await.unwrap_err().kind(),
            ErrorKind::ProducerIdCollision { .. }
        ));
        assert_eq!(second.stats().collisions, 1);
        // With auto_claim the collision moves to the next epoch and re-sends.
        let third = Producer::builder(&s, "p-dup")
            .epoch(0)
            .auto_claim(true)
            .build()
            .unwrap();
        let r = third.send_json(&20).await.unwrap().await.unwrap();
        assert_eq!((r.epoch, r.seq, r.duplicate), (1, 0, false));
        third.send_json(&21).await.unwrap().await.unwrap();
        third.close().await.unwrap();
        assert_eq!(third.stats().epochs_claimed, 1);
        assert_eq!(third.possible_duplicates(), 0);
        let back = numbers(&s.read_json::<serde_json::Value>().await.unwrap());
        assert_eq!(back, vec![1, 2, 20, 21], "{:?}", server.kind());
    }
}

/// A program run twice with a fixed producer id, building its producer the
/// plain way: the second run's data is stored (the default epoch comes from
/// the clock), or the run fails with a typed error; never `Ok` with nothing
/// stored.
#[tokio::test]
async fn a_rerun_with_the_same_id_stores_its_data() {
    for server in common::servers() {
        let client = common::client();
        let s = json_stream(&server, &client, "rerun").await;
        let mut expected = Vec::new();
        for run in 0..2u64 {
            let producer = Producer::builder(&s, "p-rerun").build().unwrap();
            let mut acks = Vec::new();
            for i in 0..100u64 {
                acks.push(producer.send_json(&(run * 1000 + i)).await.unwrap());
            }
            match producer.close().await {
                Ok(()) => {
                    for ack in acks {
                        assert!(!ack.await.unwrap().duplicate);
                    }
                    expected.extend((0..100).map(|i| run * 1000 + i));
                }
                Err(e) => assert!(
                    matches!(e.kind(), ErrorKind::ProducerIdCollision { .. }),
                    "{e}"
                ),
            }
            // The next run starts at a later millisecond.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let back = numbers(&s.read_json::<serde_json::Value>().await.unwrap());
        assert_eq!(back, expected, "{:?}", server.kind());
        assert_eq!(back.len(), 200, "both runs stored");
    }
}

/// The default epoch is the clock in milliseconds (within 2^53-1).
#[tokio::test]
async fn the_default_epoch_comes_from_the_clock() {
    let server = common::node();
    let client = common::client();
    let s = json_stream(&server, &client, "clock").await;
    let before = durable_streams_client::producer::clock_epoch();
    let producer = Producer::builder(&s, "p-clock").build().unwrap();
    let after = durable_streams_client::producer::clock_epoch();
    assert!((before..=after).contains(&producer.epoch()));
    assert!(producer.epoch() > 1_600_000_000_000 && producer.epoch() < 1 << 53);
    assert_eq!(
        Producer::builder(&s, "p").epoch(5).build().unwrap().epoch(),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_claim_moves_past_a_fencing_producer_while_requests_are_in_flight() {
    for server in common::servers() {
        let client = common::client();
        let s = json_stream(&server, &client, "claim").await;
        let zombie = Producer::builder(&s, "p-claim")
            .epoch(0)
            .auto_claim(true)
            .max_batch_items(1)
            .linger(Duration::ZERO)
            .build()
            .unwrap();
        for i in 0..50u64 {
            zombie.append_json(&i).unwrap();
        }
        // Another instance takes the id over at epoch 3 while the zombie's
        // requests are in flight.
        let fencer = Producer::builder(&s, "p-claim").epoch(3).build().unwrap();
        fencer.send_json(&1000).await.unwrap().await.unwrap();
        fencer.close().await.unwrap();
        for i in 50..100u64 {
            zombie.append_json(&i).unwrap();
        }
        zombie.flush().await.unwrap();
        let epoch = zombie.epoch();
        zombie.close().await.unwrap();
        let back = numbers(&s.read_json::<serde_json::Value>().await.unwrap());
        let mine: Vec<u64> = back.iter().copied().filter(|v| *v < 1000).collect();
        assert_eq!(mine, (0..100).collect::<Vec<_>>(), "{:?}", server.kind());
        assert_eq!(back.len(), 101, "{:?}", server.kind());
        // Either all 100 went in before the fence (epoch stays 0) or the
        // zombie claimed epoch 4; with 100 single-item requests racing one
        // request, the claim is what normally happens.
        assert!(epoch == 0 || epoch == 4, "epoch {epoch}");
    }
}

#[tokio::test]
async fn stale_epoch_without_auto_claim_fails_until_restart() {
    for server in common::servers() {
        let client = common::client();
        let s = json_stream(&server, &client, "stale").await;
        let failures = Arc::new(AtomicUsize::new(0));
        let seen_failures = Arc::clone(&failures);
        let old = Producer::builder(&s, "p-stale")
            .epoch(0)
            .on_error(move |failed| {
                assert!(matches!(
                    failed.error.kind(),
                    ErrorKind::StaleEpoch { current: 2 }
                ));
                assert_eq!(&failed.body[..], b"[1]");
                seen_failures.fetch_add(1, Ordering::SeqCst);
            })
            .build()
            .unwrap();
        let fencer = Producer::builder(&s, "p-stale").epoch(2).build().unwrap();
        fencer.send_json(&0).await.unwrap().await.unwrap();
        let err = old.send_json(&1).await.unwrap().await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::StaleEpoch { current: 2 }),
            "{err}"
        );
        assert_eq!(failures.load(Ordering::SeqCst), 1);
        assert!(old.flush().await.is_err());
        // The epoch is failed: appends fail at once with the cause.
        let again = old.append_json(&2).unwrap_err();
        assert!(matches!(again.kind(), ErrorKind::StaleEpoch { .. }));
        // Restart goes past the fencing producer's epoch.
        assert_eq!(old.restart().await.unwrap(), 3);
        old.send_json(&3).await.unwrap().await.unwrap();
        old.close().await.unwrap();
        let back = numbers(&s.read_json::<serde_json::Value>().await.unwrap());
        assert_eq!(back, vec![0, 3], "{:?}", server.kind());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_producers_on_one_stream_keep_their_own_order() {
    for server in common::servers() {
        let client = common::client();
        let s = json_stream(&server, &client, "two").await;
        let a = Producer::builder(&s, "p-a")
            .max_batch_items(3)
            .build()
            .unwrap();
        let b = Producer::builder(&s, "p-b")
            .max_batch_items(5)
            .build()
            .unwrap();
        for i in 0..500u64 {
            a.append_json(&json!({"p": "a", "i": i})).unwrap();
            b.append_json(&json!({"p": "b", "i": i})).unwrap();
        }
        a.close().await.unwrap();
        b.close().await.unwrap();
        let back = s.read_json::<serde_json::Value>().await.unwrap();
        assert_eq!(back.len(), 1000);
        for p in ["a", "b"] {
            let order: Vec<u64> = back
                .iter()
                .filter(|v| v["p"] == p)
                .map(|v| v["i"].as_u64().unwrap())
                .collect();
            assert_eq!(
                order,
                (0..500).collect::<Vec<_>>(),
                "{p} {:?}",
                server.kind()
            );
        }
    }
}

#[tokio::test]
async fn a_fork_starts_with_fresh_producer_state() {
    for server in common::servers() {
        let client = common::client();
        let source = json_stream(&server, &client, "fsrc").await;
        let p = Producer::builder(&source, "p-fork").build().unwrap();
        for i in 0..3u64 {
            p.send_json(&i).await.unwrap().await.unwrap();
        }
        p.close().await.unwrap();
        let fork = common::stream(&server, &client, "fork");
        fork.fork(ForkOptions::from_stream(&source), CreateOptions::json())
            .await
            .unwrap();
        // Same id and epoch on the fork: seq 0 is new there, not a duplicate.
        let on_fork = Producer::builder(&fork, "p-fork").build().unwrap();
        let r = on_fork.send_json(&10).await.unwrap().await.unwrap();
        assert!(!r.duplicate, "{:?}", server.kind());
        on_fork.close().await.unwrap();
        let back = numbers(&fork.read_json::<serde_json::Value>().await.unwrap());
        assert_eq!(back, vec![0, 1, 2, 10], "{:?}", server.kind());
        let src = numbers(&source.read_json::<serde_json::Value>().await.unwrap());
        assert_eq!(src, vec![0, 1, 2]);
    }
}

#[tokio::test]
async fn a_closed_stream_fails_at_once_without_retrying() {
    for server in common::servers() {
        let proxy = common::RecordingProxy::start(server.base_url()).await;
        let client = common::client();
        let url = format!("{}/v1/stream/closed-{}", proxy.base_url, fastrand::u64(..));
        let s = client.stream(url).unwrap().with_content_type("text/plain");
        s.create().await.unwrap();
        let closed = s.close().await.unwrap();
        let producer = Producer::builder(&s, "p-closed").build().unwrap();
        let err = producer.send("x").await.unwrap().await.unwrap_err();
        match err.kind() {
            ErrorKind::StreamClosed { final_offset } => {
                assert_eq!(*final_offset, closed.final_offset, "{:?}", server.kind())
            }
            other => panic!("{other:?}"),
        }
        let posts = proxy
            .request_lines()
            .iter()
            .filter(|l| l.starts_with("POST"))
            .count();
        // One close, one producer append: no retry loop.
        assert_eq!(posts, 2, "{:?}", proxy.request_lines());
        assert!(matches!(
            producer.append("y").unwrap_err().kind(),
            ErrorKind::StreamClosed { .. }
        ));
    }
}

#[tokio::test]
async fn close_stream_through_the_producer_is_idempotent() {
    for server in common::servers() {
        let client = common::client();
        let s = json_stream(&server, &client, "pclose").await;
        let producer = Producer::builder(&s, "p-close").build().unwrap();
        producer.append_json(&1).unwrap();
        let first = producer
            .close_stream(Some(bytes::Bytes::from_static(b"2")))
            .await
            .unwrap();
        assert!(first.final_offset.is_some());
        let info = s.head().await.unwrap();
        assert!(info.closed);
        assert_eq!(Some(info.next_offset), first.final_offset);
        // Closing again through the same producer repeats the closing
        // (id, epoch, seq): a duplicate for the server, even with other data.
        let again = producer
            .close_stream(Some(bytes::Bytes::from_static(b"3")))
            .await
            .unwrap();
        assert_eq!(
            again.final_offset,
            first.final_offset,
            "{:?}",
            server.kind()
        );
        // Another writer cannot close it again.
        let other = Producer::builder(&s, "p-other").build().unwrap();
        let err = other.close_stream(None).await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::StreamClosed { .. }),
            "{err} {:?}",
            server.kind()
        );
        let back = numbers(&s.read_json::<serde_json::Value>().await.unwrap());
        assert_eq!(back, vec![1, 2], "{:?}", server.kind());
    }
}

#[tokio::test]
async fn every_producer_request_carries_the_stream_headers_and_params() {
    for server in common::servers() {
        let proxy = common::RecordingProxy::start(server.base_url()).await;
        let client = common::client();
        let url = format!("{}/v1/stream/auth-{}", proxy.base_url, fastrand::u64(..));
        let token = Arc::new(AtomicUsize::new(0));
        let t = Arc::clone(&token);
        let s = client
            .stream(url)
            .unwrap()
            .with_header_fn("authorization", move || {
                format!("Bearer t{}", t.fetch_add(1, Ordering::SeqCst))
            })
            .with_param("tenant", "acme");
        s.create_with(CreateOptions::json()).await.unwrap();
        let producer = Producer::builder(&s, "p-auth")
            .max_batch_items(2)
            .build()
            .unwrap();
        for i in 0..10u64 {
            producer.append_json(&i).unwrap();
        }
        producer.close().await.unwrap();
        let seen = proxy.seen().to_ascii_lowercase();
        let posts: Vec<&str> = seen.split("post /").skip(1).collect();
        let mut seqs = std::collections::BTreeSet::new();
        for post in &posts {
            let head = post.split("\r\n\r\n").next().unwrap();
            assert!(head.contains("tenant=acme"), "{head}");
            assert!(head.contains("authorization: bearer t"), "{head}");
            assert!(head.contains("producer-id: p-auth"), "{head}");
            let seq = head
                .lines()
                .find_map(|l| l.strip_prefix("producer-seq: "))
                .expect("producer-seq header");
            seqs.insert(seq.trim().parse::<u64>().unwrap());
        }
        // Five batches of two; pipelined requests that overtook each other
        // are resent with the same seq (a sequence gap), never a new one.
        assert_eq!(seqs.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        // A fresh token per request: the create and every POST attempt.
        assert_eq!(token.load(Ordering::SeqCst), 1 + posts.len());
    }
}

#[tokio::test]
async fn a_full_buffer_is_reported_and_send_waits_for_room() {
    let server = common::node();
    let client = common::client();
    let s = common::stream(&server, &client, "full").with_content_type("text/plain");
    s.create().await.unwrap();
    let producer = Producer::builder(&s, "p-full")
        .max_buffered_bytes(10)
        .build()
        .unwrap();
    producer.append("123456").unwrap();
    // No await in between: nothing can have been acknowledged yet.
    let err = producer.append("789012").unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::BufferFull);
    assert!(matches!(
        producer.append(vec![0u8; 11]).unwrap_err().kind(),
        ErrorKind::InvalidArgument { field: "data" }
    ));
    // `send` waits for the first message's acknowledgement instead.
    let mut acks = Vec::new();
    for chunk in ["ab", "cdefgh", "ijklmnop", "q"] {
        acks.push(producer.send(chunk).await.unwrap());
        assert!(producer.buffered_bytes() <= 10);
    }
    for ack in acks {
        ack.await.unwrap();
    }
    producer.close().await.unwrap();
    assert_eq!(s.read_text().await.unwrap(), "123456abcdefghijklmnopq");
}

#[tokio::test]
async fn bad_messages_are_rejected_without_losing_the_rest() {
    let server = common::node();
    let client = common::client();
    let s = json_stream(&server, &client, "badjson").await;
    let producer = Producer::builder(&s, "p-bad").build().unwrap();
    producer.append("1").unwrap();
    for bad in ["", "{", "1 2", "[1,"] {
        let err = producer.append(bad).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::InvalidArgument { field: "data" }),
            "{bad:?}: {err}"
        );
    }
    producer.append(r#"{"ok":true}"#).unwrap();
    producer.close().await.unwrap();
    assert!(matches!(
        producer.append("2").unwrap_err().kind(),
        ErrorKind::ProducerClosed
    ));
    let back = s.read_json::<serde_json::Value>().await.unwrap();
    assert_eq!(back, vec![json!(1), json!({"ok": true})]);
}

/// 100,000 messages (through `send_json`, `feed_json` and a writer)
/// through injected 5xx (with delays and jitter) and a proxy that drops 3%
/// of answers after the server applied the write: read back exactly
/// 100,000, in order, no duplicates, no gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_under_faults() {
    const COUNT: u64 = 100_000;
    let server = common::node();
    let proxy = common::RecordingProxy::start_dropping_answers(server.base_url(), 0.03).await;
    let client = Client::builder()
        .retry_policy(
            RetryPolicy::default()
                .max_retries(30)
                .initial_delay(Duration::from_millis(2))
                .max_delay(Duration::from_millis(50)),
        )
        .build()
        .unwrap();
    let name = format!("exactly-once-{}", fastrand::u64(..));
    let direct = client.stream(server.stream_url(&name)).unwrap();
    direct.create_with(CreateOptions::json()).await.unwrap();
    server
        .inject_error(&json!({
            "path": common::path_of(&direct),
            "method": "POST",
            "status": 503,
            "delayMs": 1,
            "jitterMs": 20,
            "probability": 0.1,
            "count": 1_000_000
        }))
        .unwrap();
    let through_proxy = client
        .stream(format!("{}/v1/stream/{name}", proxy.base_url))
        .unwrap()
        .with_content_type("application/json");
    let failures = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&failures);
    let producer = Producer::builder(&through_proxy, "p-exactly-once")
        .max_batch_items(100)
        .max_in_flight(5)
        .on_error(move |f| sink.lock().unwrap().push(f.error.to_string()))
        .build()
        .unwrap();
    let mut duplicates = 0;
    let mut acks = Vec::new();
    // A third each through `send_json`, `feed_json` and a writer: the
    // same batches, numbers and retries whichever way messages come in.
    let (fed, written) = (COUNT / 3, 2 * COUNT / 3);
    for i in 0..fed {
        let ack = producer.send_json(&i).await.unwrap();
        if i % 100 == 99 {
            acks.push(ack);
        }
    }
    for i in fed..written {
        producer.feed_json(&i).await.unwrap();
    }
    let mut writer = producer.writer();
    for i in written..COUNT {
        writer.write_json(&i).await.unwrap();
    }
    writer.flush().await.unwrap();
    drop(writer);
    producer.flush().await.unwrap();
    for ack in acks {
        if ack.await.unwrap().duplicate {
            duplicates += 1;
        }
    }
    producer.close().await.unwrap();
    server.clear_errors().unwrap();
    assert!(
        failures.lock().unwrap().is_empty(),
        "{:?}",
        failures.lock().unwrap()
    );
    let back = numbers(&direct.read_json::<serde_json::Value>().await.unwrap());
    assert_eq!(back.len() as u64, COUNT);
    assert!(
        back.iter().copied().eq(0..COUNT),
        "out of order or duplicated"
    );
    // Dropped answers after applied writes must have produced duplicates
    // that the server recognised.
    assert!(
        duplicates > 0,
        "no duplicate seen: the fault proxy did nothing"
    );
    eprintln!("exactly-once: {COUNT} messages, {duplicates} duplicate batches acknowledged");
}

#[tokio::test]
async fn offsets_in_receipts_are_resumable() {
    let server = common::node();
    let client = common::client();
    let s = json_stream(&server, &client, "resume").await;
    let producer = Producer::builder(&s, "p-resume").build().unwrap();
    let first = producer.send_json(&1).await.unwrap().await.unwrap();
    producer.send_json(&2).await.unwrap().await.unwrap();
    producer.close().await.unwrap();
    let after: Vec<serde_json::Value> = s
        .read()
        .offset(first.offset.clone().unwrap_or_else(Offset::start))
        .collect_json()
        .await
        .unwrap();
    assert_eq!(after, vec![json!(2)]);
}

/// An outage shorter than the delivery timeout only delays: the batches
/// are retried (backing off) with the same numbers until the server is back;
/// meanwhile the buffer fills, `append` answers `BufferFull` and `send`
/// waits. Nothing is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_shorter_than_the_delivery_timeout_only_delays() {
    let mut server = TestServer::start(ServerKind::Rust);
    let client = common::client();
    let s = json_stream(&server, &client, "outage").await;
    server.kill().unwrap();
    let producer = Producer::builder(&s, "p-outage")
        .max_batch_items(10)
        .max_buffered_bytes(100)
        .delivery_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let restarter = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_secs(3));
        server.restart().unwrap();
        server
    });
    // Fire-and-forget appends fill the buffer and are then refused.
    let mut next = 0u64;
    let full = loop {
        match producer.append_json(&next) {
            Ok(()) => next += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(full.kind(), &ErrorKind::BufferFull);
    assert!(next > 10, "{next}");
    // `send` waits for room: until the server is back.
    let mut acks = Vec::new();
    for i in next..next + 100 {
        acks.push(producer.send_json(&i).await.unwrap());
    }
    assert!(started.elapsed() >= Duration::from_secs(3));
    producer.flush().await.unwrap();
    let _server = restarter.await.unwrap();
    for ack in acks {
        ack.await.unwrap();
    }
    producer.close().await.unwrap();
    let back = numbers(&s.read_json::<serde_json::Value>().await.unwrap());
    assert_eq!(back, (0..next + 100).collect::<Vec<_>>());
}

/// A server down for longer than the delivery timeout: the batch fails with
/// `DeliveryTimeout` (after backing off, not hammering), nothing silently.
#[tokio::test]
async fn a_longer_outage_fails_with_delivery_timeout() {
    let mut server = TestServer::start(ServerKind::Rust);
    let client = common::client();
    let s = json_stream(&server, &client, "timeout").await;
    server.kill().unwrap();
    let producer = Producer::builder(&s, "p-timeout")
        .delivery_timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = producer.send_json(&1).await.unwrap().await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), &ErrorKind::DeliveryTimeout, "{err}");
    assert!(err.to_string().contains("delivery timeout"), "{err}");
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(
        producer.append_json(&2).unwrap_err().kind(),
        &ErrorKind::DeliveryTimeout
    );
    assert!(producer.close().await.is_err());
}

/// The crash run's outcome.
struct CrashRun {
    /// Messages read back.
    back: Vec<u64>,
    /// Messages whose receipt said written.
    acked: Vec<u64>,
    /// Messages whose receipt was an error with an unknown outcome.
    unknown: Vec<u64>,
    /// The producer's first error, if any.
    error: Option<durable_streams_client::Error>,
    stats: durable_streams_client::ProducerStats,
    elapsed: Duration,
}

/// `count` JSON messages through one producer to a WAL-durable Rust server
/// that is killed with SIGKILL twice mid-run and restarted on the same data
/// directory: once after 1 s down, once after 10 s down. The Rust server
/// loses its producer state in such a crash.
async fn crash_run(count: u64, recover: bool) -> CrashRun {
    let server = TestServer::start(ServerKind::Rust);
    let client = common::client();
    let s = json_stream(&server, &client, "crash").await;
    let producer = Producer::builder(&s, "p-crash")
        .recover_lost_state(recover)
        .max_batch_bytes(16 << 10)
        // A small buffer keeps appends close to acknowledgements, so the
        // crashes hit a run in progress.
        .max_buffered_bytes(128 << 10)
        .build()
        .unwrap();
    let appended = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let progress = Arc::clone(&appended);
    let killer = tokio::task::spawn_blocking(move || {
        let mut server = server;
        for (at, down) in [(3, 1), (6, 10)] {
            while progress.load(Ordering::SeqCst) < count * at / 10 {
                std::thread::sleep(Duration::from_millis(1));
                if !server.is_running() {
                    panic!("server died: {}", server.recent_output());
                }
            }
            server.kill().unwrap();
            eprintln!(
                "crash: killed at {} appended, down {down}s",
                progress.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_secs(down));
            server.restart().unwrap();
        }
        server
    });
    let started = std::time::Instant::now();
    let mut acks = Vec::new();
    let mut error = None;
    for i in 0..count {
        match producer.send_json(&i).await {
            Ok(ack) => {
                if !recover {
                    acks.push((i, ack));
                }
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
        appended.store(i + 1, Ordering::SeqCst);
    }
    if error.is_some() {
        // Let the killer finish its schedule.
        appended.store(count, Ordering::SeqCst);
    }
    let _server = killer.await.unwrap();
    if let Err(e) = producer.close().await {
        error.get_or_insert(e);
    }
    let elapsed = started.elapsed();
    let (mut acked, mut unknown) = (Vec::new(), Vec::new());
    for (i, ack) in acks {
        match ack.await {
            Ok(_) => acked.push(i),
            Err(e) if e.is_outcome_unknown() => unknown.push(i),
            Err(_) => {}
        }
    }
    let back = numbers(&s.read_json::<serde_json::Value>().await.unwrap());
    CrashRun {
        back,
        acked,
        unknown,
        error,
        stats: producer.stats(),
        elapsed,
    }
}

fn check_recovered(count: u64, run: &CrashRun) {
    assert!(run.error.is_none(), "{:?}", run.error);
    // The Rust server is WAL-durable: a crash right after its log reached
    // disk can keep the producer's state, and the producer then just
    // carries on. So two crashes lose it once or twice; at least one loss
    // shows that the recovery ran (the runs so far: two, once one).
    assert!((1..=2).contains(&run.stats.state_losses), "{:?}", run.stats);
    let mut seen = vec![false; count as usize];
    let mut first_occurrences = Vec::with_capacity(count as usize);
    let mut duplicates = 0u64;
    for &v in &run.back {
        if std::mem::replace(&mut seen[v as usize], true) {
            duplicates += 1;
        } else {
            first_occurrences.push(v);
        }
    }
    assert!(
        first_occurrences.iter().copied().eq(0..count),
        "a message is missing or out of order"
    );
    assert!(
        duplicates <= run.stats.possible_duplicate_messages,
        "{duplicates} duplicates but only {} reported possible",
        run.stats.possible_duplicate_messages
    );
    eprintln!(
        "crash test: {count} messages, {} read back, {duplicates} duplicates, {} possible duplicates reported ({} batches), {} state losses, {:.1}s",
        run.back.len(),
        run.stats.possible_duplicate_messages,
        run.stats.possible_duplicate_batches,
        run.stats.state_losses,
        run.elapsed.as_secs_f64()
    );
}

/// A smaller run (whether batches are in flight at a kill is a matter of
/// timing; more, smaller runs see more of those cases).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_two_server_crashes_with_recovery() {
    const COUNT: u64 = 100_000;
    let run = crash_run(COUNT, true).await;
    check_recovered(COUNT, &run);
}

/// The full-size run: about 15 s in a debug build, 11 s of it the server
/// being down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_two_server_crashes_with_recovery_1m() {
    const COUNT: u64 = 1_000_000;
    let run = crash_run(COUNT, true).await;
    check_recovered(COUNT, &run);
}

/// Without recovery, the lost state is a typed error, and nothing that was
/// acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_without_recovery_is_a_typed_error_and_loses_nothing_acknowledged() {
    const COUNT: u64 = 100_000;
    let run = crash_run(COUNT, false).await;
    let error = run.error.expect("the lost state must fail the producer");
    assert!(
        matches!(error.kind(), ErrorKind::ProducerStateLost { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("recover_lost_state"), "{error}");
    assert!(!run.acked.is_empty());
    let stored: std::collections::HashSet<u64> = run.back.iter().copied().collect();
    let missing = run.acked.iter().filter(|i| !stored.contains(i)).count();
    assert_eq!(missing, 0, "acknowledged messages lost");
    // What is stored beyond that was reported as possibly written.
    let reported: std::collections::HashSet<u64> =
        run.acked.iter().chain(&run.unknown).copied().collect();
    let unreported = run.back.iter().filter(|i| !reported.contains(i)).count();
    assert_eq!(unreported, 0, "stored messages reported as plainly failed");
    // Without an epoch change nothing can be duplicated.
    let unique = stored.len();
    assert_eq!(unique, run.back.len(), "duplicates without recovery");
    assert!(run.back.iter().copied().eq(0..run.back.len() as u64));
    eprintln!(
        "crash without recovery: {} acknowledged, {} outcome unknown, {} stored, error: {error}",
        run.acked.len(),
        run.unknown.len(),
        run.back.len()
    );
}

/// A server that stops answering (SIGSTOP) under a client without request
/// timeout: the delivery timeout still bounds the batch, and the failure
/// says the outcome is unknown (the request was sent).
#[tokio::test]
async fn the_delivery_timeout_bounds_a_hanging_request() {
    let server = TestServer::start(ServerKind::Rust);
    let client = Client::builder().no_request_timeout().build().unwrap();
    let s = json_stream(&server, &client, "hang").await;
    let producer = Producer::builder(&s, "p-hang")
        .delivery_timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .arg(sig)
            .arg(server.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let started = std::time::Instant::now();
    let err = producer.send_json(&1).await.unwrap().await.unwrap_err();
    let took = started.elapsed();
    signal("-CONT");
    assert_eq!(err.kind(), &ErrorKind::DeliveryTimeout, "{err}");
    assert!(err.is_outcome_unknown(), "{err}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// `detect_collisions(false)`: a new instance deliberately re-sending the
/// same batches is acknowledged as duplicates (the reference client's view).
#[tokio::test]
async fn without_collision_detection_a_resent_batch_is_a_duplicate() {
    let server = common::node();
    let client = common::client();
    let s = json_stream(&server, &client, "nodetect").await;
    for _ in 0..2 {
        let p = Producer::builder(&s, "p-nodetect")
            .epoch(0)
            .detect_collisions(false)
            .build()
            .unwrap();
        p.send_json(&1).await.unwrap().await.unwrap();
        p.close().await.unwrap();
    }
    let back = numbers(&s.read_json::<serde_json::Value>().await.unwrap());
    assert_eq!(back, vec![1]);
}
