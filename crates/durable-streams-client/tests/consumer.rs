//! The long-running consumer against both real servers: delivery, resumption
//! from a file checkpoint, crash/restart under load (at-least-once), panics,
//! live tailing and closure.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durable_streams_client::consumer::{
    Batch, CheckpointStore, Consumer, ConsumerHandle, ErrorAction, FileCheckpointStore, Flow,
    Handler, Json, StartFrom, StopReason,
};
use durable_streams_client::{
    CreateOptions, Error, ErrorKind, LiveMode, Offset, Result, RetryPolicy, Stream,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Msg {
    n: u64,
}

/// Records every message number it handles; optionally panics once at `panic_at`.
#[derive(Clone, Default)]
struct Collect {
    seen: Arc<Mutex<Vec<u64>>>,
    errors: Arc<Mutex<Vec<ErrorKind>>>,
    panic_at: Option<u64>,
    panicked: Arc<AtomicBool>,
    on_error: Option<ErrorAction>,
    closed_at: Arc<Mutex<Option<Offset>>>,
    up_to_date: Arc<AtomicU64>,
    /// Simulated work after recording a batch (a kill here means handled but
    /// not committed: a duplicate on restart).
    work: Duration,
}

impl Collect {
    fn seen(&self) -> Vec<u64> {
        self.seen.lock().unwrap().clone()
    }
    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Handler for Collect {
    type Format = Json<Msg>;

    async fn handle_batch(&mut self, batch: &Batch<Msg>) -> Result<Flow> {
        if let Some(at) = self.panic_at
            && batch.items.iter().any(|m| m.n == at)
            && !self.panicked.swap(true, Ordering::SeqCst)
        {
            panic!("handler fails on message {at}");
        }
        self.seen
            .lock()
            .unwrap()
            .extend(batch.items.iter().map(|m| m.n));
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        Ok(Flow::Continue)
    }

    async fn handle_error(&mut self, error: &Error) -> ErrorAction {
        self.errors.lock().unwrap().push(error.kind().clone());
        self.on_error
            .unwrap_or_else(|| ErrorAction::default_for(error))
    }

    async fn on_up_to_date(&mut self, _offset: &Offset) {
        self.up_to_date.fetch_add(1, Ordering::SeqCst);
    }

    async fn on_closed(&mut self, offset: &Offset) {
        *self.closed_at.lock().unwrap() = Some(offset.clone());
    }
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy::default()
        .max_retries(20)
        .initial_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(100))
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ds-consumer-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A catch-up consumer (it stops at the tail) of `stream`, spawned.
fn catch_up<H: Handler>(stream: &Stream, handler: H) -> ConsumerHandle {
    Consumer::builder(stream, handler)
        .live(LiveMode::Off)
        .retry_policy(fast_retries())
        .build()
        .unwrap()
        .spawn()
}

async fn json_stream(server: &test_servers::TestServer, prefix: &str) -> Stream {
    let s = common::stream(server, &common::client(), prefix);
    s.create_with(CreateOptions::json()).await.unwrap();
    s
}

async fn wait_until(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn tail(stream: &Stream) -> Offset {
    stream.head().await.unwrap().next_offset
}

#[tokio::test]
async fn consumer_reads_all_appended_messages() {
    const N: u64 = 200;
    for server in common::servers() {
        let s = json_stream(&server, "all").await;
        for n in 0..N {
            s.append_json(&Msg { n }).await.unwrap();
        }
        // Catch-up only: stops at the tail.
        let h = Collect::default();
        let handle = catch_up(&s, h.clone());
        let reason = handle.join().await.unwrap();
        assert_eq!(reason, StopReason::CaughtUp, "{}", server.kind());
        assert_eq!(h.seen(), (0..N).collect::<Vec<_>>(), "{}", server.kind());

        // Live (auto): same data, then keeps running until shut down.
        let h = Collect::default();
        let handle = Consumer::builder(&s, h.clone())
            .retry_policy(fast_retries())
            .build()
            .unwrap()
            .spawn();
        wait_until("all messages", Duration::from_secs(10), || {
            h.count() == N as usize
        })
        .await;
        let end = tail(&s).await;
        wait_until("the commit", Duration::from_secs(5), || {
            handle.offset() == Some(end.clone())
        })
        .await;
        assert!(!handle.is_finished());
        assert_eq!(handle.shutdown().await.unwrap(), StopReason::Shutdown);
        assert_eq!(h.seen(), (0..N).collect::<Vec<_>>());
        assert!(h.up_to_date.load(Ordering::SeqCst) >= 1);
        assert!(h.errors.lock().unwrap().is_empty());
    }
}

/// One handled batch: its message numbers, body bytes and exactness.
type Seen = (Vec<u64>, usize, bool);

/// Records each batch's size: items and body bytes.
#[derive(Clone, Default)]
struct Sizes {
    batches: Arc<Mutex<Vec<Seen>>>,
}

impl Handler for Sizes {
    type Format = Json<Msg>;

    async fn handle_batch(&mut self, batch: &Batch<Msg>) -> Result<Flow> {
        let items = batch.items.iter().map(|m| m.n).collect();
        self.batches
            .lock()
            .unwrap()
            .push((items, batch.bytes, batch.exact));
        Ok(Flow::Continue)
    }
}

/// Responses larger than a piece are decoded by the read itself while they
/// arrive: every message once, in order, in several batches that report
/// their bytes, and only the last one of a response is exact.
#[tokio::test]
async fn consumer_decodes_responses_larger_than_a_piece_as_they_arrive() {
    const N: u64 = 500;
    for server in common::servers() {
        let s = json_stream(&server, "pieces").await;
        let messages: Vec<Msg> = (0..N).map(|n| Msg { n }).collect();
        s.append_json_batch(&messages).await.unwrap();
        let client = durable_streams_client::Client::builder()
            .max_response_bytes(1024)
            .build()
            .unwrap();
        let small = client.stream(s.url().as_str()).unwrap();
        let h = Sizes::default();
        let handle = catch_up(&small, h.clone());
        assert_eq!(handle.join().await.unwrap(), StopReason::CaughtUp);
        let batches = h.batches.lock().unwrap().clone();
        let seen: Vec<u64> = batches.iter().flat_map(|(n, _, _)| n.clone()).collect();
        assert_eq!(seen, (0..N).collect::<Vec<_>>(), "{}", server.kind());
        assert!(
            batches.len() > 3,
            "{}: {} batches",
            server.kind(),
            batches.len()
        );
        for (items, bytes, _) in &batches {
            assert!(
                *bytes >= items.len() * 7 && *bytes <= 1024 + 64,
                "{bytes} bytes"
            );
        }
        assert!(batches.last().unwrap().2, "the last batch is exact");
    }
}

#[tokio::test]
async fn consumer_resumes_from_a_file_checkpoint_without_rehandling() {
    for server in common::servers() {
        let s = json_stream(&server, "resume").await;
        let dir = temp_dir("resume");
        let store = FileCheckpointStore::new(&dir);
        s.append_json_batch((0..50).map(|n| Msg { n }))
            .await
            .unwrap();

        let first = Collect::default();
        let handle = Consumer::builder(&s, first.clone())
            .name("resumer")
            .start_from(StartFrom::Checkpoint)
            .checkpoint_store(store.clone())
            .retry_policy(fast_retries())
            .build()
            .unwrap()
            .spawn();
        let end = tail(&s).await;
        wait_until("first run caught up", Duration::from_secs(10), || {
            handle.offset() == Some(end.clone())
        })
        .await;
        assert_eq!(handle.shutdown().await.unwrap(), StopReason::Shutdown);
        assert_eq!(first.seen(), (0..50).collect::<Vec<_>>());
        assert_eq!(store.load("resumer").await.unwrap(), Some(end.clone()));
        assert_eq!(
            std::fs::read_to_string(dir.join("resumer")).unwrap().trim(),
            end.as_str()
        );

        s.append_json_batch((50..80).map(|n| Msg { n }))
            .await
            .unwrap();
        let second = Collect::default();
        let handle = Consumer::builder(&s, second.clone())
            .name("resumer")
            .checkpoint_store(store.clone())
            .live(LiveMode::Off)
            .retry_policy(fast_retries())
            .build()
            .unwrap()
            .spawn();
        assert_eq!(handle.offset(), None, "nothing committed or loaded yet");
        assert_eq!(handle.join().await.unwrap(), StopReason::CaughtUp);
        assert_eq!(
            second.seen(),
            (50..80).collect::<Vec<_>>(),
            "{}: only new messages after resuming",
            server.kind()
        );
        assert_eq!(store.load("resumer").await.unwrap(), Some(tail(&s).await));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[tokio::test]
async fn consumer_killed_and_restarted_ten_times_under_load_handles_everything() {
    const TOTAL: u64 = 100_000;
    const BATCH: u64 = 1_000;
    const KILLS: usize = 10;
    for server in common::servers() {
        let started = Instant::now();
        let s = json_stream(&server, "kill").await;
        let dir = temp_dir("kill");
        let store = FileCheckpointStore::new(&dir);

        let writer = s.clone();
        let final_tail: Arc<Mutex<Option<Offset>>> = Arc::default();
        let final_tail_w = Arc::clone(&final_tail);
        let writer_task = tokio::spawn(async move {
            for b in 0..TOTAL / BATCH {
                let appended = writer
                    .append_json_batch((b * BATCH..(b + 1) * BATCH).map(|n| Msg { n }))
                    .await
                    .unwrap();
                if b + 1 == TOTAL / BATCH {
                    *final_tail_w.lock().unwrap() = appended.next_offset;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });

        let consumer = |h: Collect| {
            Consumer::builder(&s, h)
                .name("killed")
                .checkpoint_store(store.clone())
                .retry_policy(fast_retries())
                .build()
                .unwrap()
                .spawn()
        };

        let mut runs: Vec<Vec<u64>> = Vec::new();
        let mut kills_while_writing = 0;
        for kill in 0..KILLS {
            let h = Collect {
                work: Duration::from_millis(5),
                ..Collect::default()
            };
            let handle = consumer(h.clone());
            // Let it make some progress (unless everything is handled already),
            // then kill it mid-flight.
            wait_until("progress", Duration::from_secs(20), || {
                h.count() > 0 || {
                    let end = final_tail.lock().unwrap().clone();
                    end.is_some() && handle.offset() == end
                }
            })
            .await;
            tokio::time::sleep(Duration::from_millis(fastrand::u64(20..150))).await;
            kills_while_writing += usize::from(final_tail.lock().unwrap().is_none());
            if kill % 2 == 0 {
                drop(handle);
            } else {
                handle.abort();
            }
            // Give an aborted run's in-flight work a moment to stop.
            tokio::time::sleep(Duration::from_millis(5)).await;
            runs.push(h.seen());
        }
        writer_task.await.unwrap();
        let writer_done = started.elapsed();

        // The last run catches up and is shut down cleanly at the tail.
        let h = Collect::default();
        let handle = consumer(h.clone());
        let end = tail(&s).await;
        wait_until("final catch-up", Duration::from_secs(60), || {
            handle.offset() == Some(end.clone())
        })
        .await;
        assert_eq!(handle.shutdown().await.unwrap(), StopReason::Shutdown);
        runs.push(h.seen());

        // In order without gaps within each run; each run starts no later than
        // where the previous ones got (at-least-once, never a gap).
        let mut next_new = 0u64;
        let mut handled = 0usize;
        for (i, run) in runs.iter().enumerate() {
            handled += run.len();
            if let Some(&first) = run.first() {
                assert!(
                    first <= next_new,
                    "{}: run {i} starts at {first} but {next_new} was never handled",
                    server.kind()
                );
            }
            for w in run.windows(2) {
                assert_eq!(w[1], w[0] + 1, "{}: run {i} out of order", server.kind());
            }
            if let Some(&last) = run.last() {
                next_new = next_new.max(last + 1);
            }
        }
        assert_eq!(next_new, TOTAL, "{}: every message handled", server.kind());
        assert_eq!(store.load("killed").await.unwrap(), Some(end.clone()));
        let duplicates = handled - TOTAL as usize;
        println!(
            "{}: {TOTAL} messages, {KILLS} kills ({kills_while_writing} while the writer ran), \
             {handled} handled, {duplicates} duplicates ({:.2} %), writer done after {:?}, \
             total {:?}",
            server.kind(),
            duplicates as f64 * 100.0 / TOTAL as f64,
            writer_done,
            started.elapsed()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[tokio::test]
async fn handler_panic_is_caught_and_handled_by_handle_error() {
    for server in common::servers() {
        let s = json_stream(&server, "panic").await;
        s.append_json_batch((0..5).map(|n| Msg { n }))
            .await
            .unwrap();
        s.append_json_batch((5..10).map(|n| Msg { n }))
            .await
            .unwrap();

        // Reconnect: the panicking batch is delivered again and succeeds.
        let h = Collect {
            panic_at: Some(7),
            on_error: Some(ErrorAction::Reconnect),
            ..Collect::default()
        };
        let handle = catch_up(&s, h.clone());
        assert_eq!(handle.join().await.unwrap(), StopReason::CaughtUp);
        assert_eq!(
            h.errors.lock().unwrap().as_slice(),
            [ErrorKind::Handler { panicked: true }]
        );
        let seen = h.seen();
        assert_eq!(seen.first(), Some(&0));
        assert_eq!(seen.last(), Some(&9));
        let mut distinct = seen.clone();
        distinct.dedup();
        assert_eq!(distinct, (0..10).collect::<Vec<_>>(), "{}", server.kind());

        // Default handle_error: a panic stops the consumer with the error.
        let h = Collect {
            panic_at: Some(7),
            ..Collect::default()
        };
        let handle = catch_up(&s, h.clone());
        let err = handle.join().await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Handler { panicked: true });
        assert!(
            err.to_string().contains("handler fails on message 7"),
            "{err}"
        );
        assert!(!h.seen().contains(&7));
    }
}

#[tokio::test]
async fn live_consumer_sees_messages_appended_after_start() {
    for server in common::servers() {
        for mode in [LiveMode::LongPoll, LiveMode::Sse, LiveMode::Auto] {
            let s = json_stream(&server, "tail").await;
            s.append_json(&Msg { n: 999 }).await.unwrap();
            let h = Collect::default();
            let handle = Consumer::builder(&s, h.clone())
                .start_from(StartFrom::Now)
                .live(mode)
                .retry_policy(fast_retries())
                .build()
                .unwrap()
                .spawn();
            tokio::time::sleep(Duration::from_millis(300)).await;
            for n in 0..3 {
                s.append_json(&Msg { n }).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            wait_until("live messages", Duration::from_secs(10), || h.count() == 3).await;
            assert_eq!(handle.shutdown().await.unwrap(), StopReason::Shutdown);
            assert_eq!(h.seen(), [0, 1, 2], "{} {mode:?}", server.kind());
        }
    }
}

#[tokio::test]
async fn closed_stream_ends_the_consumer() {
    for server in common::servers() {
        for mode in [LiveMode::LongPoll, LiveMode::Sse, LiveMode::Auto] {
            let s = json_stream(&server, "closed").await;
            s.append_json_batch((0..3).map(|n| Msg { n }))
                .await
                .unwrap();
            let h = Collect::default();
            let handle = Consumer::builder(&s, h.clone())
                .live(mode)
                .retry_policy(fast_retries())
                .build()
                .unwrap()
                .spawn();
            let writer = s.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                writer.append_json(&Msg { n: 3 }).await.unwrap();
                writer.close().await.unwrap();
            });
            let reason = tokio::time::timeout(Duration::from_secs(10), handle.join())
                .await
                .expect("consumer ends after closure")
                .unwrap();
            assert_eq!(reason, StopReason::Closed, "{} {mode:?}", server.kind());
            assert_eq!(h.seen(), [0, 1, 2, 3]);
            let closed_at = h.closed_at.lock().unwrap().clone();
            assert_eq!(
                closed_at,
                Some(tail(&s).await),
                "on_closed saw the final offset"
            );
        }
        // Already closed before the consumer starts.
        let s = json_stream(&server, "closed-before").await;
        s.append_json(&Msg { n: 0 }).await.unwrap();
        s.close().await.unwrap();
        let h = Collect::default();
        let handle = Consumer::builder(&s, h.clone()).build().unwrap().spawn();
        assert_eq!(handle.join().await.unwrap(), StopReason::Closed);
        assert_eq!(h.seen(), [0]);
    }
}

#[tokio::test]
async fn server_errors_make_the_consumer_reconnect_with_backoff() {
    let server = common::node();
    // No request-level retries: every 503 reaches the consumer.
    let client = durable_streams_client::Client::builder()
        .retry_policy(RetryPolicy::never())
        .build()
        .unwrap();
    let s = common::stream(&server, &client, "reconnect");
    s.create_with(CreateOptions::json()).await.unwrap();
    s.append_json_batch((0..20).map(|n| Msg { n }))
        .await
        .unwrap();
    server
        .inject_error(&serde_json::json!({
            "path": common::path_of(&s), "method": "GET", "status": 503, "count": 3
        }))
        .unwrap();
    let h = Collect::default();
    let started = Instant::now();
    let handle = Consumer::builder(&s, h.clone())
        .live(LiveMode::Off)
        .retry_policy(
            RetryPolicy::default()
                .initial_delay(Duration::from_millis(50))
                .max_delay(Duration::from_millis(200))
                .jitter(0.0),
        )
        .build()
        .unwrap()
        .spawn();
    assert_eq!(handle.join().await.unwrap(), StopReason::CaughtUp);
    assert_eq!(
        h.errors.lock().unwrap().as_slice(),
        vec![ErrorKind::Server { status: 503 }; 3]
    );
    assert_eq!(h.seen(), (0..20).collect::<Vec<_>>());
    // Backoff 50 + 100 + 200 ms (no jitter) before the successful attempt.
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
}
