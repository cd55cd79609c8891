//! The guided tour (`scripts/demo.sh` runs it against a local server):
//! produce 100,000 events with the idempotent producer, read them back, tail
//! live while writing and measure delivery latency, run a checkpointed
//! consumer, stop and resume it, close the stream and watch a live reader end.
//!
//! Run against a server: `cargo run --release --example tour -- http://127.0.0.1:4437`

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use durable_streams_client::consumer::{
    Batch, Consumer, FileCheckpointStore, Flow, Handler, Json, StartFrom, StopReason,
};
use durable_streams_client::{Client, CreateOptions, LiveMode, Offset, Producer, Result, Stream};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

const EVENTS: u64 = 100_000;
const LIVE_EVENTS: u64 = 200;
const MORE_EVENTS: u64 = 1_000;

#[derive(Debug, Serialize, Deserialize)]
struct Event {
    n: u64,
    /// Microseconds since the Unix epoch when the event was written.
    sent_us: u64,
    kind: String,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

fn step(title: &str) {
    println!("\n== {title}");
}

#[tokio::main]
async fn main() -> Result<()> {
    let base = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DS_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:4437".to_owned());
    let client = Client::new();
    let name = format!("tour-{}", std::process::id());
    let stream = client.stream(format!("{base}/v1/stream/{name}"))?;
    let started = Instant::now();

    step("1. create a JSON stream");
    let created = stream.create_with(CreateOptions::json()).await?;
    println!("created {} (new: {})", stream.url(), created.created);

    step("2. produce 100,000 events through the idempotent producer");
    let (produce_time, bytes) = produce(&stream).await?;
    println!(
        "{EVENTS} events, {:.1} MB in {:.2} s: {:.0} events/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        produce_time.as_secs_f64(),
        EVENTS as f64 / produce_time.as_secs_f64(),
        bytes as f64 / 1e6 / produce_time.as_secs_f64()
    );

    step("3. read them back (catch-up)");
    let t = Instant::now();
    let events: Vec<Event> = stream.read_json().await?;
    let in_order = events.iter().zip(0..).all(|(e, n)| e.n == n);
    println!(
        "read {} events in {:.2} s (in order, no gaps: {in_order})",
        events.len(),
        t.elapsed().as_secs_f64()
    );
    let tail = stream.head().await?.next_offset;

    step("4. tail live (SSE) while writing; append-to-delivery latency");
    let mut latencies = tail_while_writing(&stream, tail).await?;
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "{} events delivered live: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        pct(0.5) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
        pct(1.0) as f64 / 1000.0
    );

    step("5. a consumer with a file checkpoint: run, stop, resume");
    let checkpoints = std::env::temp_dir().join(format!("ds-tour-{}", std::process::id()));
    let (first, second) = consume_twice(&stream, &checkpoints).await?;
    let _ = std::fs::remove_dir_all(&checkpoints);
    println!(
        "the first run handled {first} events and committed its checkpoint; the resumed run \
         handled only the {second} new ones ({} in all, none twice)",
        first + second
    );

    step("6. close the stream: a live reader ends cleanly");
    let reader = {
        let live = stream.read().offset(Offset::now()).live(LiveMode::Auto);
        tokio::spawn(async move {
            let mut chunks = live.bytes();
            let mut last = None;
            while let Some(chunk) = chunks.next().await {
                last = Some(chunk?);
            }
            Ok::<_, durable_streams_client::Error>(last)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let closed = stream
        .close_with_json(&Event {
            n: EVENTS + LIVE_EVENTS + MORE_EVENTS,
            sent_us: now_us(),
            kind: "goodbye".to_owned(),
        })
        .await?;
    let last = reader.await.expect("reader task")?;
    println!(
        "closed at {}; the live reader ended with closed = {}",
        closed
            .final_offset
            .map(|o| o.to_string())
            .unwrap_or_default(),
        last.is_some_and(|c| c.closed)
    );

    step("summary");
    println!(
        "{} events written and read back, live latency p50 {:.2} ms, consumer resumed from its \
         checkpoint, stream closed; {:.1} s in all",
        EVENTS + LIVE_EVENTS + MORE_EVENTS + 1,
        pct(0.5) as f64 / 1000.0,
        started.elapsed().as_secs_f64()
    );
    stream.delete().await?;
    Ok(())
}

/// Produce the events with a progress line on a terminal.
async fn produce(stream: &Stream) -> Result<(Duration, u64)> {
    let producer = Producer::builder(stream, format!("tour-{}", std::process::id())).build()?;
    let show = std::io::stderr().is_terminal();
    let t = Instant::now();
    let mut bytes = 0u64;
    for n in 0..EVENTS {
        let event = Event {
            n,
            sent_us: now_us(),
            kind: "created".to_owned(),
        };
        bytes += serde_json::to_vec(&event)
            .map(|v| v.len() as u64)
            .unwrap_or(0);
        drop(producer.send_json(&event).await?);
        if show && n % 5_000 == 4_999 {
            let secs = t.elapsed().as_secs_f64();
            eprint!(
                "\r  {:>7} / {EVENTS}  {:>9.0} msg/s  {:>6.1} MB/s",
                n + 1,
                (n + 1) as f64 / secs,
                bytes as f64 / 1e6 / secs
            );
            let _ = std::io::stderr().flush();
        }
    }
    producer.close().await?;
    if show {
        eprintln!();
    }
    Ok((t.elapsed(), bytes))
}

/// Start an SSE reader at `from`, append events one request each, and
/// return each event's delivery latency in microseconds.
async fn tail_while_writing(stream: &Stream, from: Offset) -> Result<Vec<u64>> {
    let mut live = stream
        .read()
        .offset(from)
        .live(LiveMode::Sse)
        .json::<Event>();
    let writer = {
        let stream = stream.clone();
        tokio::spawn(async move {
            for i in 0..LIVE_EVENTS {
                let event = Event {
                    n: EVENTS + i,
                    sent_us: now_us(),
                    kind: "live".to_owned(),
                };
                stream.append_json(&event).await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<_, durable_streams_client::Error>(())
        })
    };
    let mut latencies = Vec::new();
    while (latencies.len() as u64) < LIVE_EVENTS {
        let Some(batch) = live.next().await else {
            break;
        };
        let received = now_us();
        for event in batch?.items {
            latencies.push(received.saturating_sub(event.sent_us));
        }
    }
    writer.await.expect("writer task")?;
    Ok(latencies)
}

/// Counts the events it handles.
struct Counter {
    handled: Arc<AtomicU64>,
}

impl Handler for Counter {
    type Format = Json<Event>;

    async fn handle_batch(&mut self, batch: &Batch<Event>) -> Result<Flow> {
        self.handled
            .fetch_add(batch.items.len() as u64, Ordering::Relaxed);
        Ok(Flow::Continue)
    }
}

async fn consume_twice(stream: &Stream, dir: &std::path::Path) -> Result<(u64, u64)> {
    let mut handled = Vec::new();
    for run in 0..2 {
        if run == 1 {
            // Written while the consumer is stopped: the resumed run must
            // handle exactly these.
            let more: Vec<Event> = (0..MORE_EVENTS)
                .map(|i| Event {
                    n: EVENTS + LIVE_EVENTS + i,
                    sent_us: now_us(),
                    kind: "while-stopped".to_owned(),
                })
                .collect();
            stream.append_json_batch(&more).await?;
            println!("  appended {MORE_EVENTS} events while the consumer was stopped");
        }
        let count = Arc::new(AtomicU64::new(0));
        let counter = Counter {
            handled: Arc::clone(&count),
        };
        let handle = Consumer::builder(stream, counter)
            .name("tour")
            .start_from(StartFrom::Checkpoint)
            .live(LiveMode::Off)
            .checkpoint_store(FileCheckpointStore::new(dir))
            .build()?
            .spawn();
        let reason: StopReason = handle.join().await?;
        let n = count.load(Ordering::Relaxed);
        println!("  run {} stopped ({reason:?}) after {n} events", run + 1);
        handled.push(n);
    }
    Ok((handled[0], handled[1]))
}
