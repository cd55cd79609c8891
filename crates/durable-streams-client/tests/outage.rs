//! Outages: a consumer and a pipeline tail a stream on the WAL-durable Rust
//! server while it is killed (`kill -9`), stays down for 30 s and is
//! restarted on the same data directory. Nothing is lost, order holds, and
//! both resume from their checkpoints.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durable_streams_client::consumer::{
    Batch, Consumer, Flow, Handler, Json, MemoryCheckpointStore, StartFrom,
};
use durable_streams_client::pipeline::{Message, Pipeline, Processed};
use durable_streams_client::{Client, CreateOptions, LiveMode, Offset, Result, Stream};
use serde::{Deserialize, Serialize};
use test_servers::{ServerKind, TestServer};

/// How long the server stays down.
const OUTAGE: Duration = Duration::from_secs(30);
/// Messages written before the crash and again after the restart.
const PER_PHASE: u64 = 2_000;

#[derive(Debug, Serialize, Deserialize)]
struct Event {
    n: u64,
}

#[derive(Clone, Default)]
struct Record {
    seen: Arc<Mutex<Vec<u64>>>,
}

impl Handler for Record {
    type Format = Json<Event>;

    async fn handle_batch(&mut self, batch: &Batch<Event>) -> Result<Flow> {
        self.seen
            .lock()
            .unwrap()
            .extend(batch.items.iter().map(|e| e.n));
        Ok(Flow::Continue)
    }
}

async fn write(stream: &Stream, range: std::ops::Range<u64>) {
    let events: Vec<u64> = range.collect();
    for chunk in events.chunks(100) {
        stream
            .append_json_batch(chunk.iter().map(|&n| Event { n }))
            .await
            .expect("append while the server is up");
    }
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Everything seen, at least once, in order of first occurrence (a batch
/// handled but not committed before a reconnect may come again).
fn assert_complete_in_order(seen: &[u64], total: u64, who: &str) {
    let mut next = 0;
    for &n in seen {
        if n == next {
            next += 1;
        } else {
            assert!(n < next, "{who}: {n} arrived before {next}");
        }
    }
    assert_eq!(next, total, "{who}: every message handled");
}

/// Crash the server, keep it down for [`OUTAGE`], restart it, write the
/// second half; returns the final tail offset.
async fn outage_and_restart(server: &mut TestServer, stream: &Stream) -> Offset {
    server.kill().expect("kill -9 the server");
    tokio::time::sleep(OUTAGE).await;
    server.restart().expect("restart on the same data dir");
    write(stream, PER_PHASE..2 * PER_PHASE).await;
    stream.head().await.expect("head after restart").next_offset
}

async fn json_stream(server: &TestServer, client: &Client, name: &str) -> Stream {
    let stream = common::stream(server, client, name);
    stream.create_with(CreateOptions::json()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_rides_out_a_crash_and_a_30s_outage() {
    let mut server = TestServer::start(ServerKind::Rust);
    let client = Client::new();
    let stream = json_stream(&server, &client, "outage-consumer").await;
    write(&stream, 0..PER_PHASE).await;

    for mode in [LiveMode::LongPoll, LiveMode::Sse] {
        let record = Record::default();
        let store = MemoryCheckpointStore::new();
        let handle = Consumer::builder(&stream, record.clone())
            .name("outage")
            .live(mode)
            .start_from(StartFrom::Checkpoint)
            .checkpoint_store(store.clone())
            .build()
            .unwrap()
            .spawn();
        let seen = Arc::clone(&record.seen);
        wait_for("the first half", Duration::from_secs(30), || {
            seen.lock().unwrap().len() as u64 >= PER_PHASE
        })
        .await;
        let end = if mode == LiveMode::LongPoll {
            outage_and_restart(&mut server, &stream).await
        } else {
            // Second round, all data already written: a shorter outage
            // while tailing with SSE from the start.
            server.kill().unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            server.restart().unwrap();
            stream.head().await.unwrap().next_offset
        };
        wait_for("the commit at the tail", Duration::from_secs(120), || {
            handle.offset() == Some(end.clone())
        })
        .await;
        assert!(!handle.is_finished(), "{mode:?}: still tailing");
        handle.shutdown().await.unwrap();
        assert_complete_in_order(
            &record.seen.lock().unwrap(),
            2 * PER_PHASE,
            &format!("{mode:?}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_rides_out_a_crash_and_a_30s_outage() {
    let mut server = TestServer::start(ServerKind::Rust);
    let client = Client::new();
    let stream = json_stream(&server, &client, "outage-pipeline").await;
    write(&stream, 0..PER_PHASE).await;

    let store = MemoryCheckpointStore::new();
    let done: Arc<Mutex<Vec<u64>>> = Arc::default();
    let sink = Arc::clone(&done);
    let handle = Pipeline::json::<Event>(&stream)
        .name("outage")
        .live(LiveMode::Auto)
        .checkpoint_store(store.clone())
        .processors(4)
        .partition_by(|m: &Message<Event>| m.data.n % 8)
        .process(|m: Message<Event>| async move { Ok(Processed::batch("sink", m)) })
        .batcher(
            "sink",
            64,
            Duration::from_millis(5),
            move |_info, msgs: Vec<Message<Event>>| {
                let sink = Arc::clone(&sink);
                async move {
                    sink.lock().unwrap().extend(msgs.iter().map(|m| m.data.n));
                    Ok(())
                }
            },
        )
        .build()
        .unwrap()
        .spawn();
    let seen = Arc::clone(&done);
    wait_for("the first half", Duration::from_secs(30), || {
        seen.lock().unwrap().len() as u64 >= PER_PHASE
    })
    .await;
    let end = outage_and_restart(&mut server, &stream).await;
    let mut committed = handle.subscribe();
    tokio::time::timeout(
        Duration::from_secs(120),
        committed.wait_for(|o| o.as_ref() == Some(&end)),
    )
    .await
    .expect("the pipeline commits the tail after the restart")
    .unwrap();
    handle.shutdown().await.unwrap();
    let mut all = done.lock().unwrap().clone();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, (0..2 * PER_PHASE).collect::<Vec<_>>(), "nothing lost");
    assert_eq!(store.get("outage"), Some(end), "checkpoint at the tail");
}
