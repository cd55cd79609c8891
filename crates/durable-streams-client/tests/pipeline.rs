//! Pipelines and the supervisor against both real servers: per-key order
//! with 8 processors, dead letters, bounded memory under a slow batcher, and
//! restarts of a panicking handler.
//!
//! Tests in this file run one at a time (a shared lock) so the memory test
//! measures only itself.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use durable_streams_client::consumer::{
    Batch, Consumer, Flow, Handler, Json, MemoryCheckpointStore, StartFrom, StopReason,
};
use durable_streams_client::pipeline::{
    BatchInfo, BatchTrigger, DeadLetter, Failure, Message, Pipeline, Processed, Stage,
};
use durable_streams_client::supervisor::{ChildSpec, Restart, Supervisor};
use durable_streams_client::{
    CreateOptions, Error, ErrorKind, LiveMode, Offset, Result, RetryPolicy, Stream,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use test_servers::{ServerKind, ServerOptions, TestServer};
use tokio_util::sync::CancellationToken;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Event {
    key: u32,
    seq: u32,
    n: u32,
}

/// A JSON dead letter's payload as a value.
fn payload(letter: &DeadLetter) -> serde_json::Value {
    serde_json::from_str(letter.payload.get()).unwrap()
}

async fn json_stream(server: &TestServer, prefix: &str) -> Stream {
    let s = common::stream(server, &common::client(), prefix);
    s.create_with(CreateOptions::json()).await.unwrap();
    s
}

async fn tail(stream: &Stream) -> Offset {
    stream.head().await.unwrap().next_offset
}

/// Events `range` over `keys` keys (key `n % keys`, each key's `seq`
/// counting up), `per_append` per request.
async fn fill(stream: &Stream, range: std::ops::Range<u32>, keys: u32, per_append: usize) {
    let events: Vec<Event> = range
        .map(|n| Event {
            key: n % keys,
            seq: n / keys,
            n,
        })
        .collect();
    for part in events.chunks(per_append) {
        stream.append_json_batch(part.iter()).await.unwrap();
        if per_append < 1000 {
            // Live appends: give the reader a chance to see them separately.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processors_keep_per_key_order_and_checkpoint_at_the_tail() {
    let _serial = SERIAL.lock().await;
    const TOTAL: u32 = 20_000;
    const KEYS: u32 = 50;
    for server in common::servers() {
        let started = Instant::now();
        let stream = json_stream(&server, "pipeline-order").await;
        // Half the history is there before the pipeline starts (one big
        // catch-up read), the other half arrives live in 100 appends (many
        // read chunks acknowledged in order).
        fill(&stream, 0..TOTAL / 2, KEYS, 1000).await;

        let processed: Arc<Mutex<HashMap<u32, Vec<u32>>>> = Arc::default();
        let batched: Arc<Mutex<HashMap<u32, Vec<u32>>>> = Arc::default();
        let active_per_key: Arc<Mutex<HashSet<u32>>> = Arc::default();
        let overlaps = Arc::new(AtomicUsize::new(0));
        let batches = Arc::new(AtomicUsize::new(0));
        let store = MemoryCheckpointStore::new();
        let chunks: Arc<Mutex<HashSet<Offset>>> = Arc::default();
        let (p, a, o) = (
            Arc::clone(&processed),
            Arc::clone(&active_per_key),
            Arc::clone(&overlaps),
        );
        let c = Arc::clone(&chunks);
        let (b, nb) = (Arc::clone(&batched), Arc::clone(&batches));
        let handle = Pipeline::json::<Event>(&stream)
            .name("order")
            .live(LiveMode::LongPoll)
            .checkpoint_store(store.clone())
            .processors(8)
            .partition_by(|m: &Message<Event>| m.data.key)
            .max_in_flight_messages(2_000)
            .process(move |m: Message<Event>| {
                let (p, a, o, c) = (
                    Arc::clone(&p),
                    Arc::clone(&a),
                    Arc::clone(&o),
                    Arc::clone(&c),
                );
                async move {
                    let key = m.data.key;
                    c.lock().unwrap().insert(m.position.next_offset.clone());
                    if !a.lock().unwrap().insert(key) {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    if m.data.n.is_multiple_of(97) {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                    p.lock().unwrap().entry(key).or_default().push(m.data.seq);
                    a.lock().unwrap().remove(&key);
                    Ok(Processed::batch("sink", m))
                }
            })
            .batcher(
                "sink",
                100,
                Duration::from_millis(20),
                move |info: BatchInfo, msgs: Vec<Message<Event>>| {
                    let (b, nb) = (Arc::clone(&b), Arc::clone(&nb));
                    async move {
                        assert!(info.size <= 100);
                        nb.fetch_add(1, Ordering::SeqCst);
                        let mut b = b.lock().unwrap();
                        for m in msgs {
                            b.entry(m.data.key).or_default().push(m.data.seq);
                        }
                        Ok(())
                    }
                },
            )
            .build()
            .unwrap()
            .spawn();
        // One append at a time, each waited for until the reader has handed
        // it out as a read chunk of its own: on a loaded machine a writer
        // running ahead would merge them into a few big responses.
        for start in (TOTAL / 2..TOTAL).step_by(100) {
            let before = chunks.lock().unwrap().len();
            fill(&stream, start..start + 100, KEYS, 100).await;
            let waited = Instant::now();
            while chunks.lock().unwrap().len() == before {
                assert!(
                    waited.elapsed() < Duration::from_secs(20),
                    "the append at {start} was never read"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let end = tail(&stream).await;
        let mut committed = handle.subscribe();
        tokio::time::timeout(
            Duration::from_secs(30),
            committed.wait_for(|o| o.as_ref() == Some(&end)),
        )
        .await
        .expect("checkpoint reaches the tail")
        .unwrap();
        let reason = handle.shutdown().await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(reason, StopReason::Shutdown, "{:?}", server.kind());

        let processed = processed.lock().unwrap().clone();
        let batched = batched.lock().unwrap().clone();
        assert_eq!(processed.len(), KEYS as usize);
        let mut count = 0;
        for key in 0..KEYS {
            for (what, map) in [("processed", &processed), ("batched", &batched)] {
                let seqs = &map[&key];
                let expected: Vec<u32> = (0..seqs.len() as u32).collect();
                assert_eq!(seqs, &expected, "{what}: key {key} out of order");
            }
            count += processed[&key].len();
        }
        assert_eq!(count, TOTAL as usize, "every message handled once");
        assert_eq!(
            overlaps.load(Ordering::SeqCst),
            0,
            "a key ran on two workers"
        );
        assert_eq!(
            store.get("order"),
            Some(end.clone()),
            "checkpoint at the tail"
        );
        let chunks = chunks.lock().unwrap().len();
        assert!(chunks > 10, "only {chunks} read chunks");
        println!(
            "{:?}: {TOTAL} messages, {KEYS} keys, 8 processors, {chunks} read chunks, {} batches in {elapsed:?}",
            server.kind(),
            batches.load(Ordering::SeqCst)
        );

        // A second run resumes from the checkpoint: nothing left to do.
        let again = Arc::new(AtomicUsize::new(0));
        let a2 = Arc::clone(&again);
        let reason = Pipeline::json::<Event>(&stream)
            .name("order")
            .live(LiveMode::Off)
            .checkpoint_store(store.clone())
            .process(move |_m| {
                a2.fetch_add(1, Ordering::SeqCst);
                async { Ok(Processed::done()) }
            })
            .build()
            .unwrap()
            .spawn()
            .join()
            .await
            .unwrap();
        assert_eq!(reason, StopReason::CaughtUp);
        assert_eq!(again.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_messages_land_in_the_dead_letter_stream_with_their_offsets() {
    let _serial = SERIAL.lock().await;
    for server in common::servers() {
        let stream = json_stream(&server, "pipeline-dlq-src").await;
        // Several appends so the messages span several read chunks.
        for start in (0..200u32).step_by(20) {
            stream
                .append_json_batch((start..start + 20).map(|n| Event { key: 0, seq: n, n }))
                .await
                .unwrap();
        }
        // One message that does not decode as an Event.
        stream
            .append_json(&serde_json::json!({"bad": true}))
            .await
            .unwrap();
        let end = tail(&stream).await;
        let dlq = json_stream(&server, "pipeline-dlq").await;

        let failures: Arc<Mutex<Vec<Failure>>> = Arc::default();
        let f = Arc::clone(&failures);
        let store = MemoryCheckpointStore::new();
        let reason = Pipeline::json::<Event>(&stream)
            .name("dlq")
            .live(LiveMode::Off)
            .checkpoint_store(store.clone())
            .processors(4)
            .process(|m: Message<Event>| async move {
                match m.data.n % 10 {
                    3 => Err(Error::handler(format!("processor rejects {}", m.data.n))),
                    7 if m.data.n == 77 => panic!("processor panics on 77"),
                    _ => Ok(Processed::batch("db", m)),
                }
            })
            .batcher(
                "db",
                5,
                Duration::from_millis(10),
                |_info, msgs: Vec<Message<Event>>| async move {
                    if msgs.iter().any(|m| m.data.n == 150) {
                        Err(Error::handler("batch with 150 fails"))
                    } else {
                        Ok(())
                    }
                },
            )
            .on_failure(move |failure| f.lock().unwrap().push(failure.clone()))
            .dead_letter_stream(&dlq)
            .build()
            .unwrap()
            .spawn()
            .join()
            .await
            .unwrap();
        assert_eq!(reason, StopReason::CaughtUp);
        assert_eq!(
            store.get("dlq"),
            Some(end),
            "dead-lettered messages count as done"
        );

        let mut letters = Vec::new();
        let mut read = dlq.read().json::<DeadLetter>();
        while let Some(batch) = read.next().await {
            letters.extend(batch.unwrap().items);
        }
        let failures = failures.lock().unwrap().clone();
        assert_eq!(letters.len(), failures.len(), "{:?}", server.kind());

        let mut by_stage: HashMap<String, Vec<DeadLetter>> = HashMap::new();
        for letter in letters {
            assert_eq!(letter.pipeline, "dlq");
            by_stage
                .entry(letter.stage.clone())
                .or_default()
                .push(letter);
        }
        // Processor failures: every n % 10 == 3, plus the panic on 77.
        let mut rejected: Vec<u32> = by_stage["processor"]
            .iter()
            .map(|l| payload(l)["n"].as_u64().unwrap() as u32)
            .collect();
        rejected.sort_unstable();
        let mut expected: Vec<u32> = (0..200).filter(|n| n % 10 == 3).collect();
        expected.push(77);
        expected.sort_unstable();
        assert_eq!(rejected, expected);
        assert!(
            by_stage["processor"]
                .iter()
                .any(|l| l.error.contains("panicked") && payload(l)["n"] == 77)
        );
        // The batch holding 150 failed as a whole (up to 5 messages).
        let batch_failed = &by_stage["batcher"];
        assert!(!batch_failed.is_empty() && batch_failed.len() <= 5);
        assert!(batch_failed.iter().any(|l| payload(l)["n"] == 150));
        assert!(
            batch_failed
                .iter()
                .all(|l| l.batcher.as_deref() == Some("db"))
        );
        // The undecodable message, as JSON.
        let decode = &by_stage["decode"];
        assert_eq!(decode.len(), 1);
        assert_eq!(payload(&decode[0]), serde_json::json!({"bad": true}));
        assert_eq!(decode[0].encoding, "json");

        // Each dead letter's offset reads back the original message.
        for letter in by_stage.values().flatten().take(12) {
            let from = Offset::parse(&letter.offset).unwrap();
            let mut read = stream.read().offset(from).json::<serde_json::Value>();
            let first = read.next().await.unwrap().unwrap();
            assert_eq!(first.items[letter.index], payload(letter), "{letter:?}");
        }
        assert!(
            failures
                .iter()
                .any(|f| f.stage == Stage::Decode && f.error.kind() != &ErrorKind::Network)
        );
    }
}

/// A Rust server (memory durability, so the disk is not what is measured)
/// and an empty byte stream on it.
async fn memory_test_stream(name: &str) -> (TestServer, Stream) {
    let server = TestServer::start_with(
        ServerKind::Rust,
        ServerOptions {
            durability_memory: true,
            ..Default::default()
        },
    );
    let stream = durable_streams_client::Client::new()
        .stream(server.unique_stream_url(name))
        .unwrap()
        .with_content_type("application/octet-stream");
    stream.create().await.unwrap();
    (server, stream)
}

/// Samples this process's resident memory every 5 ms and keeps the peak.
struct PeakRss {
    before: u64,
    peak: Arc<AtomicU64>,
    sampling: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    fn start() -> Self {
        let before = resident_bytes();
        let peak = Arc::new(AtomicU64::new(before));
        let sampling = Arc::new(AtomicBool::new(true));
        let task = {
            let (peak, sampling) = (Arc::clone(&peak), Arc::clone(&sampling));
            tokio::spawn(async move {
                while sampling.load(Ordering::Relaxed) {
                    peak.fetch_max(resident_bytes(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        PeakRss {
            before,
            peak,
            sampling,
            task,
        }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Stop sampling; the peak growth over the start.
    async fn stop(&mut self) -> u64 {
        self.sampling.store(false, Ordering::Relaxed);
        (&mut self.task).await.unwrap();
        self.peak().saturating_sub(self.before)
    }
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// 256 MiB through a pipeline whose batcher is slow: the reader is held
/// back by the read-ahead window, so resident memory grows by a small
/// fraction of the data.
///
/// Here the pipeline tails the stream (long-poll) while a writer appends
/// 1 MiB blocks, staying at most 8 MiB ahead of what the processors have
/// seen: the batcher is the bottleneck and the window is what holds the
/// reader back. The pre-written case is the next test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_batcher_keeps_memory_bounded() {
    let _serial = SERIAL.lock().await;
    const BLOCK: usize = 1 << 20;
    const BLOCKS: usize = 256;
    const WINDOW: usize = 8 << 20;
    let (_server, stream) = memory_test_stream("pipeline-memory").await;

    let mut rss = PeakRss::start();
    // Bytes the processors have seen minus bytes the batcher finished:
    // what sits inside the pipeline.
    let read_bytes = Arc::new(AtomicU64::new(0));
    let batched_bytes = Arc::new(AtomicU64::new(0));
    let max_inside = Arc::new(AtomicU64::new(0));
    let max_chunk = Arc::new(AtomicU64::new(0));
    let batches = Arc::new(AtomicU32::new(0));
    let (rb, mc) = (Arc::clone(&read_bytes), Arc::clone(&max_chunk));
    let (rb2, bb, mi, nb) = (
        Arc::clone(&read_bytes),
        Arc::clone(&batched_bytes),
        Arc::clone(&max_inside),
        Arc::clone(&batches),
    );
    let started = Instant::now();
    let handle = Pipeline::bytes(&stream)
        .name("memory")
        .live(LiveMode::LongPoll)
        .start_from(StartFrom::Start)
        .processors(2)
        .max_in_flight_bytes(WINDOW)
        .channel_capacity(2)
        .process(move |m: Message<Bytes>| {
            let len = m.data.len() as u64;
            rb.fetch_add(len, Ordering::SeqCst);
            mc.fetch_max(len, Ordering::SeqCst);
            async move { Ok(Processed::batch("slow", m)) }
        })
        .batcher(
            "slow",
            4,
            Duration::from_millis(20),
            move |_info, msgs: Vec<Message<Bytes>>| {
                let (rb2, bb, mi, nb) = (
                    Arc::clone(&rb2),
                    Arc::clone(&bb),
                    Arc::clone(&mi),
                    Arc::clone(&nb),
                );
                async move {
                    let bytes: u64 = msgs.iter().map(|m| m.data.len() as u64).sum();
                    let inside = rb2.load(Ordering::SeqCst) - bb.load(Ordering::SeqCst);
                    mi.fetch_max(inside, Ordering::SeqCst);
                    // ~10 ms per MiB: slower than the reader and the writer.
                    tokio::time::sleep(Duration::from_micros(10 * (bytes >> 10))).await;
                    bb.fetch_add(bytes, Ordering::SeqCst);
                    nb.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            },
        )
        .build()
        .unwrap()
        .spawn();

    let block = Bytes::from(vec![0x5au8; BLOCK]);
    let mut writer_waits = 0u32;
    for i in 0..BLOCKS {
        while (i * BLOCK) as u64 > read_bytes.load(Ordering::SeqCst) + (8 << 20) {
            writer_waits += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        stream.append(block.clone()).await.unwrap();
        if i % 32 == 31 {
            println!(
                "after {} MiB: rss {:.1} MiB, peak {:.1} MiB",
                i + 1,
                resident_bytes() as f64 / 1048576.0,
                rss.peak() as f64 / 1048576.0
            );
        }
    }
    stream.close().await.unwrap();
    let write_time = started.elapsed();
    drop(block);
    let reason = handle.join().await.unwrap();
    let elapsed = started.elapsed();
    let growth = rss.stop().await;
    assert_eq!(reason, StopReason::Closed);
    let total = (BLOCK * BLOCKS) as u64;
    assert_eq!(batched_bytes.load(Ordering::SeqCst), total);
    let max_chunk = max_chunk.load(Ordering::SeqCst);
    let max_inside = max_inside.load(Ordering::SeqCst);
    println!(
        "memory: {} MiB written in {write_time:?}, all through a slow batcher after {elapsed:?} \
         ({} batches); RSS before {:.1} MiB, peak growth {:.1} MiB; window {} MiB, \
         largest read {:.1} MiB, most bytes inside the pipeline {:.1} MiB; \
         the writer waited for the reader {writer_waits} times",
        total >> 20,
        batches.load(Ordering::SeqCst),
        rss.before as f64 / 1048576.0,
        growth as f64 / 1048576.0,
        WINDOW >> 20,
        max_chunk as f64 / 1048576.0,
        max_inside as f64 / 1048576.0,
    );
    assert!(
        max_inside <= WINDOW as u64 + max_chunk,
        "the window was exceeded: {max_inside} bytes inside"
    );
    assert!(
        growth < 64 << 20,
        "resident memory grew by {} MiB for a {} MiB stream",
        growth >> 20,
        total >> 20
    );
}

/// The case: a stream written in full before the pipeline starts
/// (256 MiB here, to keep the test short) and read from the start with
/// catch-up reads. Both servers answer with everything past the offset in
/// one response; the client streams it in pieces of at most 1 MiB, so the
/// slow batcher holds the reader back and resident memory stays bounded by
/// the window, not by the stream or the response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_batcher_over_a_prewritten_stream_keeps_memory_bounded() {
    let _serial = SERIAL.lock().await;
    const BLOCK: usize = 1 << 20;
    const BLOCKS: usize = 256;
    const WINDOW: usize = 8 << 20;
    let (_server, stream) = memory_test_stream("pipeline-prewritten").await;
    let block = Bytes::from(vec![0x5au8; BLOCK]);
    for _ in 0..BLOCKS {
        stream.append(block.clone()).await.unwrap();
    }
    stream.close().await.unwrap();
    drop(block);

    let mut rss = PeakRss::start();
    let batched = Arc::new(AtomicU64::new(0));
    let max_chunk = Arc::new(AtomicU64::new(0));
    let (bb, mc) = (Arc::clone(&batched), Arc::clone(&max_chunk));
    let started = Instant::now();
    let handle = Pipeline::bytes(&stream)
        .name("prewritten")
        .live(LiveMode::Off)
        .start_from(StartFrom::Start)
        .processors(2)
        .max_in_flight_bytes(WINDOW)
        .channel_capacity(2)
        .process(move |m: Message<Bytes>| {
            mc.fetch_max(m.data.len() as u64, Ordering::SeqCst);
            async move { Ok(Processed::batch("slow", m)) }
        })
        .batcher(
            "slow",
            4,
            Duration::from_millis(20),
            move |_info, msgs: Vec<Message<Bytes>>| {
                let bb = Arc::clone(&bb);
                async move {
                    let bytes: u64 = msgs.iter().map(|m| m.data.len() as u64).sum();
                    // ~10 ms per MiB: far slower than reading.
                    tokio::time::sleep(Duration::from_micros(10 * (bytes >> 10))).await;
                    bb.fetch_add(bytes, Ordering::SeqCst);
                    Ok(())
                }
            },
        )
        .build()
        .unwrap()
        .spawn();
    let reason = handle.join().await.unwrap();
    let elapsed = started.elapsed();
    let growth = rss.stop().await;
    assert_eq!(reason, StopReason::Closed);
    let total = (BLOCK * BLOCKS) as u64;
    assert_eq!(batched.load(Ordering::SeqCst), total);
    let max_chunk = max_chunk.load(Ordering::SeqCst);
    println!(
        "prewritten: {} MiB read through a slow batcher in {elapsed:?}; largest piece {:.2} MiB; \
         RSS before {:.1} MiB, peak growth {:.1} MiB (window {} MiB)",
        total >> 20,
        max_chunk as f64 / 1048576.0,
        rss.before as f64 / 1048576.0,
        growth as f64 / 1048576.0,
        WINDOW >> 20
    );
    assert!(max_chunk <= 1 << 20, "a piece of {max_chunk} bytes");
    assert!(
        growth < 64 << 20,
        "resident memory grew by {} MiB for a {} MiB stream",
        growth >> 20,
        total >> 20
    );
}

#[derive(Debug, Serialize, Deserialize)]
struct Msg {
    n: u32,
}

/// Panics once on message `panic_at` (per `panicked` flag), or always.
struct Fragile {
    seen: Arc<Mutex<Vec<u32>>>,
    panic_at: u32,
    panicked: Arc<AtomicBool>,
    always: bool,
}

impl Handler for Fragile {
    type Format = Json<Msg>;

    async fn handle_batch(&mut self, batch: &Batch<Msg>) -> Result<Flow> {
        for m in &batch.items {
            if m.n == self.panic_at && (self.always || !self.panicked.swap(true, Ordering::SeqCst))
            {
                panic!("handler panics on {}", m.n);
            }
        }
        self.seen
            .lock()
            .unwrap()
            .extend(batch.items.iter().map(|m| m.n));
        Ok(Flow::Continue)
    }
}

fn fast_backoff() -> RetryPolicy {
    RetryPolicy::default()
        .initial_delay(Duration::from_millis(5))
        .max_delay(Duration::from_millis(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_restarts_a_panicking_handler_and_gives_up_past_intensity() {
    let _serial = SERIAL.lock().await;
    for server in common::servers() {
        let stream = json_stream(&server, "supervised").await;
        for n in 0..10u32 {
            stream.append_json(&Msg { n }).await.unwrap();
        }
        stream.close().await.unwrap();

        // Panics once: restarted, resumes from the checkpoint, finishes.
        let store = MemoryCheckpointStore::new();
        let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
        let panicked = Arc::new(AtomicBool::new(false));
        let starts = Arc::new(AtomicU32::new(0));
        let (s, sn, p, st) = (
            stream.clone(),
            Arc::clone(&seen),
            Arc::clone(&panicked),
            Arc::clone(&starts),
        );
        let store2 = store.clone();
        let started = Instant::now();
        Supervisor::builder()
            .child(
                ChildSpec::consumer("fragile", move || {
                    st.fetch_add(1, Ordering::SeqCst);
                    Consumer::builder(
                        &s,
                        Fragile {
                            seen: Arc::clone(&sn),
                            panic_at: 5,
                            panicked: Arc::clone(&p),
                            always: false,
                        },
                    )
                    .name("fragile")
                    .checkpoint_store(store2.clone())
                    .build()
                })
                .restart(Restart::Transient),
            )
            .intensity(3, Duration::from_secs(10))
            .backoff(fast_backoff())
            .build()
            .unwrap()
            .run(CancellationToken::new())
            .await
            .unwrap();
        assert!(panicked.load(Ordering::SeqCst));
        assert_eq!(starts.load(Ordering::SeqCst), 2, "one restart");
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, (0..10).collect::<Vec<_>>(), "every message handled");
        println!(
            "{:?}: panicking handler restarted once, finished in {:?}",
            server.kind(),
            started.elapsed()
        );

        // Panics every time: the supervisor stops after the intensity limit.
        let starts = Arc::new(AtomicU32::new(0));
        let (s, st) = (stream.clone(), Arc::clone(&starts));
        let err = Supervisor::builder()
            .child(ChildSpec::consumer("doomed", move || {
                st.fetch_add(1, Ordering::SeqCst);
                Consumer::builder(
                    &s,
                    Fragile {
                        seen: Arc::default(),
                        panic_at: 5,
                        panicked: Arc::default(),
                        always: true,
                    },
                )
                .name("doomed")
                .build()
            }))
            // A raw task that panics outright is supervised alongside.
            .child(ChildSpec::new(
                "bystander",
                |token: CancellationToken| async move {
                    token.cancelled().await;
                    Ok(())
                },
            ))
            .intensity(2, Duration::from_secs(10))
            .backoff(fast_backoff())
            .shutdown_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
            .run(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::RestartIntensity);
        assert_eq!(starts.load(Ordering::SeqCst), 3, "start + 2 restarts");
    }
}

/// A child task that panics (not caught by a consumer) is restarted through
/// the JoinError; a pipeline child drains on supervisor shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_restarts_panicking_tasks_and_drains_pipelines_on_shutdown() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(ServerKind::Rust);
    let stream = json_stream(&server, "supervised-pipeline").await;
    fill(&stream, 0..500, 5, 100).await;
    let end = tail(&stream).await;
    let store = MemoryCheckpointStore::new();
    let handled = Arc::new(AtomicUsize::new(0));
    let panics = Arc::new(AtomicU32::new(0));
    let (s, st, h) = (stream.clone(), store.clone(), Arc::clone(&handled));
    let pn = Arc::clone(&panics);
    let handle = Supervisor::builder()
        .child(ChildSpec::pipeline("pipe", move || {
            let h = Arc::clone(&h);
            Pipeline::json::<Event>(&s)
                .name("supervised")
                .live(LiveMode::LongPoll)
                .checkpoint_store(st.clone())
                .processors(3)
                .process(move |_m| {
                    h.fetch_add(1, Ordering::SeqCst);
                    async { Ok(Processed::done()) }
                })
                .build()
        }))
        .child(ChildSpec::new(
            "panics-twice",
            move |token: CancellationToken| {
                let n = pn.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        panic!("task panic #{n}");
                    }
                    token.cancelled().await;
                    Ok(())
                }
            },
        ))
        .intensity(5, Duration::from_secs(10))
        .backoff(fast_backoff())
        .build()
        .unwrap()
        .spawn();
    // Both happen before the shutdown: the pipeline reaches the tail, and
    // the panicking task is restarted twice (whichever is slower).
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.get("supervised") != Some(end.clone()) || panics.load(Ordering::SeqCst) < 3 {
        assert!(
            Instant::now() < deadline,
            "pipeline did not reach the tail, or the task was not restarted twice"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.shutdown().await.unwrap();
    assert_eq!(handled.load(Ordering::SeqCst), 500);
    assert_eq!(panics.load(Ordering::SeqCst), 3, "two panics, two restarts");
}

/// A missing dead-letter stream is created (JSON) when the pipeline starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dead_letter_stream_is_created() {
    let _serial = SERIAL.lock().await;
    for server in common::servers() {
        let stream = json_stream(&server, "dlq-create-src").await;
        fill(&stream, 0..3, 1, 1000).await;
        let dlq = common::stream(&server, &common::client(), "dlq-create");
        let reason = Pipeline::json::<Event>(&stream)
            .name("dlq-create")
            .live(LiveMode::Off)
            .checkpoint_store(MemoryCheckpointStore::new())
            .process(|m: Message<Event>| async move {
                if m.data.n == 1 {
                    Err(Error::handler("fails"))
                } else {
                    Ok(Processed::done())
                }
            })
            .dead_letter_stream(&dlq)
            .build()
            .unwrap()
            .spawn()
            .join()
            .await
            .unwrap();
        assert_eq!(reason, StopReason::CaughtUp, "{:?}", server.kind());
        let letters = dlq.read_json::<DeadLetter>().await.unwrap();
        assert_eq!(letters.len(), 1, "{:?}", server.kind());
        assert_eq!(payload(&letters[0])["n"], 1);
    }
}

/// A dead letter that cannot be written stops the pipeline with that error,
/// and the checkpoint stays before the failed message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_dead_letter_stops_the_pipeline_before_the_message() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(ServerKind::Rust);
    let stream = json_stream(&server, "dlq-missing-src").await;
    fill(&stream, 0..10, 1, 1000).await;
    let after_first = tail(&stream).await;
    fill(&stream, 10..20, 1, 1000).await;
    // A closed dead-letter stream: it exists, but takes no dead letters.
    let missing = common::stream(&server, &common::client(), "dlq-missing");
    missing.create_with(CreateOptions::json()).await.unwrap();
    missing.close().await.unwrap();
    let store = MemoryCheckpointStore::new();
    // Read the two appends as separate chunks: start after the first one
    // was committed by an earlier run.
    let err = Pipeline::json::<Event>(&stream)
        .name("dlq-missing")
        .live(LiveMode::Off)
        .start_from(StartFrom::Offset(after_first.clone()))
        .checkpoint_store(store.clone())
        .process(|m: Message<Event>| async move {
            if m.data.n == 15 {
                Err(Error::handler("fails"))
            } else {
                Ok(Processed::done())
            }
        })
        .dead_letter_stream(&missing)
        .build()
        .unwrap()
        .spawn()
        .join()
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::StreamClosed { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("dead letter"), "{err}");
    assert_eq!(store.get("dlq-missing"), None, "nothing committed past it");
}

/// Abort a busy pipeline (8 unpartitioned processors with random delays, so
/// completions are out of order) mid-stream: the checkpoint never covers a
/// message that was not finished, and a restart from it finishes the rest
/// (at least once, nothing lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_never_commits_unfinished_messages_and_restart_completes() {
    let _serial = SERIAL.lock().await;
    const TOTAL: u32 = 5_000;
    for server in common::servers() {
        let stream = json_stream(&server, "pipeline-abort").await;
        let store = MemoryCheckpointStore::new();
        let done: Arc<Mutex<HashSet<u32>>> = Arc::default();
        let chunk_of: Arc<Mutex<HashMap<u32, Offset>>> = Arc::default();
        let make = |done: Arc<Mutex<HashSet<u32>>>, chunk_of: Arc<Mutex<HashMap<u32, Offset>>>| {
            Pipeline::json::<Event>(&stream)
                .name("abort")
                .live(LiveMode::LongPoll)
                .checkpoint_store(store.clone())
                .processors(8)
                .max_in_flight_messages(500)
                .process(move |m: Message<Event>| {
                    chunk_of
                        .lock()
                        .unwrap()
                        .insert(m.data.n, m.position.next_offset.clone());
                    async move {
                        tokio::time::sleep(Duration::from_micros(fastrand::u64(0..2000))).await;
                        Ok(Processed::batch("done", m))
                    }
                })
                .batcher(
                    "done",
                    32,
                    Duration::from_millis(5),
                    move |_info, msgs: Vec<Message<Event>>| {
                        let done = Arc::clone(&done);
                        async move {
                            tokio::time::sleep(Duration::from_micros(fastrand::u64(0..3000))).await;
                            done.lock().unwrap().extend(msgs.iter().map(|m| m.data.n));
                            Ok(())
                        }
                    },
                )
                .build()
                .unwrap()
                .spawn()
        };
        let handle = make(Arc::clone(&done), Arc::clone(&chunk_of));
        let writer = {
            let stream = stream.clone();
            tokio::spawn(async move { fill(&stream, 0..TOTAL, 10, 50).await })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        handle.abort();
        let committed = store.get("abort");
        {
            let done = done.lock().unwrap();
            let chunk_of = chunk_of.lock().unwrap();
            let mut covered = 0;
            if let Some(c) = &committed {
                for (n, end) in chunk_of.iter() {
                    if end <= c {
                        covered += 1;
                        assert!(done.contains(n), "message {n} committed but not finished");
                    }
                }
            }
            println!(
                "{:?}: aborted with {} messages seen, {} finished, {covered} under the checkpoint",
                server.kind(),
                chunk_of.len(),
                done.len()
            );
        }
        writer.await.unwrap();
        let end = tail(&stream).await;
        let handle = make(Arc::clone(&done), Arc::clone(&chunk_of));
        let mut offset = handle.subscribe();
        tokio::time::timeout(
            Duration::from_secs(30),
            offset.wait_for(|o| o.as_ref() == Some(&end)),
        )
        .await
        .expect("restart reaches the tail")
        .unwrap();
        handle.shutdown().await.unwrap();
        assert_eq!(done.lock().unwrap().len(), TOTAL as usize, "nothing lost");
    }
}

/// `shutdown_on` (which `shutdown_on_ctrl_c` runs with ctrl-c) drains like
/// `shutdown` once its signal resolves: messages waiting in a batcher are
/// flushed by the drain and the checkpoint reaches the tail. A pipeline that
/// stops on its own first returns like `join`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_on_a_signal_drains_the_batchers_and_commits() {
    let _serial = SERIAL.lock().await;
    const TOTAL: u32 = 50;
    for server in common::servers() {
        let stream = json_stream(&server, "pipeline-signal").await;
        fill(&stream, 0..TOTAL, 5, TOTAL as usize).await;
        let end = tail(&stream).await;
        let store = MemoryCheckpointStore::new();
        let processed = Arc::new(AtomicUsize::new(0));
        let flushed: Arc<Mutex<Vec<(BatchTrigger, usize)>>> = Arc::default();
        let (p, f) = (Arc::clone(&processed), Arc::clone(&flushed));
        let handle = Pipeline::json::<Event>(&stream)
            .name("signal")
            .live(LiveMode::LongPoll)
            .checkpoint_store(store.clone())
            .process(move |m: Message<Event>| {
                p.fetch_add(1, Ordering::SeqCst);
                async move { Ok(Processed::batch("sink", m)) }
            })
            // Never full and never timed out: only the drain flushes it.
            .batcher(
                "sink",
                1000,
                Duration::from_secs(3600),
                move |info: BatchInfo, msgs: Vec<Message<Event>>| {
                    f.lock().unwrap().push((info.trigger, msgs.len()));
                    async { Ok(()) }
                },
            )
            .build()
            .unwrap()
            .spawn();
        let (signal, signalled) = tokio::sync::oneshot::channel::<()>();
        let stopping = tokio::spawn(handle.shutdown_on(signalled));

        let waited = Instant::now();
        while processed.load(Ordering::SeqCst) < TOTAL as usize {
            assert!(
                waited.elapsed() < Duration::from_secs(20),
                "{:?}: only {} of {TOTAL} messages processed",
                server.kind(),
                processed.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!stopping.is_finished(), "it runs until the signal");
        assert!(flushed.lock().unwrap().is_empty(), "nothing flushed yet");
        assert_eq!(store.get("signal"), None, "nothing committed yet");

        signal.send(()).unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(30), stopping)
            .await
            .expect("the drain ends")
            .unwrap()
            .unwrap();
        assert_eq!(reason, StopReason::Shutdown, "{:?}", server.kind());
        let flushed = flushed.lock().unwrap().clone();
        assert!(
            flushed.iter().all(|(t, _)| *t == BatchTrigger::Drain),
            "{flushed:?}"
        );
        let total: usize = flushed.iter().map(|(_, n)| n).sum();
        assert_eq!(total, TOTAL as usize, "every message flushed by the drain");
        assert_eq!(store.get("signal"), Some(end), "checkpoint at the tail");

        // Stopping on its own (caught up) before the signal: like `join`.
        let reason = Pipeline::json::<Event>(&stream)
            .name("signal-off")
            .live(LiveMode::Off)
            .process(|_m: Message<Event>| async { Ok(Processed::done()) })
            .build()
            .unwrap()
            .spawn()
            .shutdown_on(std::future::pending::<()>())
            .await
            .unwrap();
        assert_eq!(reason, StopReason::CaughtUp, "{:?}", server.kind());
    }
}
