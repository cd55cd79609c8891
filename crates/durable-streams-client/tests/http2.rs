//! The client over HTTP/2 (`ClientBuilder::http2_prior_knowledge`): neither
//! reference server speaks HTTP/2, so these tests go through the test
//! servers' proxy, which accepts cleartext HTTP/2 (h2c) and forwards over
//! HTTP/1.1. Every operation, catch-up and both live modes, and the
//! producer, with every request of the client multiplexed over HTTP/2.

mod common;

use std::time::Duration;

use durable_streams_client::{Client, CreateOptions, LiveMode, Offset, Producer, Stream};
use futures::StreamExt;
use test_servers::fault_proxy::FaultProxy;

const WAIT: Duration = Duration::from_secs(10);

fn h2_client() -> Client {
    Client::builder()
        .http2_prior_knowledge(true)
        .build()
        .expect("client")
}

/// The next chunk with data of a live read started at the tail, after
/// `data` is appended.
async fn live_delivery(s: &Stream, mode: LiveMode, data: &'static str) -> String {
    let tail = s.head().await.expect("head").next_offset;
    let mut reader = s.read().offset(tail).live(mode).text();
    let waiting = tokio::spawn(async move {
        loop {
            let chunk = reader.next().await.expect("read ended").expect("read");
            if !chunk.text.is_empty() {
                return chunk.text;
            }
        }
    });
    // The read is connected (or its request is on its way) before the append.
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.append(data).await.expect("append");
    tokio::time::timeout(WAIT, waiting)
        .await
        .unwrap_or_else(|_| panic!("{mode:?}: no delivery within {WAIT:?}"))
        .expect("reader task")
}

#[tokio::test]
async fn every_operation_works_over_http2() {
    for server in common::servers() {
        let kind = server.kind();
        let proxy = FaultProxy::start(&server);
        let client = h2_client();
        let s = client
            .stream(proxy.url_of(&server.unique_stream_url("h2")))
            .expect("stream url");
        s.create_with(CreateOptions::new().content_type("text/plain"))
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: create: {e}"));
        s.append("a").await.expect("append");
        s.append("b").await.expect("append");
        let all = s.read().offset(Offset::start()).collect_bytes().await;
        assert_eq!(&all.expect("catch-up")[..], b"ab", "{kind:?}");

        assert_eq!(live_delivery(&s, LiveMode::Sse, "c").await, "c", "{kind:?}");
        assert_eq!(
            live_delivery(&s, LiveMode::LongPoll, "d").await,
            "d",
            "{kind:?}"
        );

        let producer = Producer::builder(&s, "p-h2").build().expect("producer");
        for i in 0..100 {
            producer.feed(format!("<{i}>")).await.expect("feed");
        }
        producer.close().await.expect("producer close");
        let expected: String = ["a", "b", "c", "d"]
            .into_iter()
            .map(str::to_owned)
            .chain((0..100).map(|i| format!("<{i}>")))
            .collect();
        let all = s.read().offset(Offset::start()).collect_bytes().await;
        assert_eq!(all.expect("read back"), expected.as_bytes(), "{kind:?}");

        s.close().await.expect("close");
        s.delete().await.expect("delete");

        let total = proxy.total_requests();
        assert!(total >= 10, "{kind:?}: {total} requests");
        assert_eq!(
            proxy.http2_requests(),
            total,
            "{kind:?}: every request over HTTP/2: {:?}",
            proxy.request_log()
        );
    }
}
