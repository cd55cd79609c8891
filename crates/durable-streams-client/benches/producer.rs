//! Producer throughput against the Rust server, next to a raw baseline
//! measured in the same run.
//!
//! ```text
//! cargo bench -p durable-streams-client --bench producer
//! DS_BENCH_QUICK=1 cargo bench -p durable-streams-client --bench producer   # 1/100 of the work
//! DS_BENCH_FILTER=JSON cargo bench -p durable-streams-client --bench producer # one scenario
//! ```
//!
//! Scenarios: 100,000 x 100 B (bytes; through `send`, `send_many`,
//! `send_slice` from one reused buffer, `feed_slice`: the same without an
//! acknowledgement per message), 1,000,000 x 100 B through a
//! `ProducerWriter` (a batch of its own, no lock per message), 1,000,000 x 64 B (JSON values, through
//! `send_json`, `feed_json` and `write_json`), 50 x 1 MiB (bytes). "ours" is the
//! idempotent [`Producer`] with its defaults (1 MiB batches, 5 ms linger,
//! 5 in flight), fed with backpressure (each call awaited). Messages
//! given to `send` are separate
//! `Bytes`, freed inside the measured time; `send_slice` takes each from
//! one reused buffer instead. The baseline is a minimal hyper client
//! posting the same pre-built batch bodies with the same producer headers
//! and the same concurrency (5 lanes, each its own producer id so that no
//! lane waits on another's sequence). The baseline does no batching, no
//! encoding and no bookkeeping, so it is the ceiling. A second baseline,
//! "1-lane", posts the same bodies as ONE producer id, one request at a
//! time: what a single producer gets when the server applies its requests
//! strictly in order (PROTOCOL.md 5.2.1 serializes per producer), without
//! any client cost. `ratio1` compares against it. Each scenario runs
//! `ROUNDS` times, alternating; the table shows medians, min and max.
//! CPU time is this process's on-CPU time (all threads, from schedstat; the
//! server is another process), per message.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use durable_streams_client::{Client, CreateOptions, Producer, Stream};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use test_servers::TestServer;

const ROUNDS: usize = 5;
const LANES: usize = 5;
const BATCH_BYTES: usize = 1 << 20;

#[derive(Clone, Copy)]
enum Payload {
    Bytes,
    Json,
}

#[derive(Clone, Copy, PartialEq)]
enum How {
    /// One `send` per message, each its own `Bytes`.
    Send,
    /// One `send_many` for all messages.
    Many,
    /// One `send_slice` per message, each written into one reused buffer
    /// (no allocation per message, on either side).
    Slice,
    /// One `feed_slice` per message from one reused buffer (JSON:
    /// `feed_json`): backpressure without a per-message acknowledgement.
    Feed,
    /// One `ProducerWriter::write` per message from one reused buffer
    /// (JSON: `write_json`): a batch of the writer's own, no lock per
    /// message.
    Writer,
}

struct Scenario {
    name: &'static str,
    count: usize,
    size: usize,
    payload: Payload,
    /// How messages are handed over.
    how: How,
}

struct Sample {
    elapsed: Duration,
    cpu: Duration,
}

fn main() {
    let quick = common::quick();
    let scale = if quick { 100 } else { 1 };
    let Some((server, runtime)) = common::rust_server() else {
        return;
    };
    let scenarios = [
        Scenario {
            name: "100,000 x 100 B",
            count: 100_000 / scale,
            size: 100,
            payload: Payload::Bytes,
            how: How::Send,
        },
        Scenario {
            name: "100,000 x 100 B many",
            count: 100_000 / scale,
            size: 100,
            payload: Payload::Bytes,
            how: How::Many,
        },
        Scenario {
            name: "100,000 x 100 B slice",
            count: 100_000 / scale,
            size: 100,
            payload: Payload::Bytes,
            how: How::Slice,
        },
        Scenario {
            name: "100,000 x 100 B feed",
            count: 100_000 / scale,
            size: 100,
            payload: Payload::Bytes,
            how: How::Feed,
        },
        Scenario {
            // Ten times the others': the per-message CPU figure is tens of
            // nanoseconds, and 100,000 messages are over in ~10 ms.
            name: "1,000,000 x 100 B writer",
            count: 1_000_000 / scale,
            size: 100,
            payload: Payload::Bytes,
            how: How::Writer,
        },
        Scenario {
            name: "1,000,000 x 64 B JSON",
            count: 1_000_000 / scale,
            size: 64,
            payload: Payload::Json,
            how: How::Send,
        },
        Scenario {
            name: "1,000,000 x 64 B JSON feed",
            count: 1_000_000 / scale,
            size: 64,
            payload: Payload::Json,
            how: How::Feed,
        },
        Scenario {
            name: "1,000,000 x 64 B JSON writer",
            count: 1_000_000 / scale,
            size: 64,
            payload: Payload::Json,
            how: How::Writer,
        },
        Scenario {
            name: "50 x 1 MiB",
            count: if quick { 5 } else { 50 },
            size: 1 << 20,
            payload: Payload::Bytes,
            how: How::Send,
        },
    ];
    println!(
        "producer throughput vs raw hyper baseline (Rust server, memory durability, {ROUNDS} rounds, medians)"
    );
    println!(
        "{:<24} {:>12} {:>9} {:>12} {:>9} {:>7} {:>14} {:>14} {:>10} {:>8}  spread (ours / baseline, min-max s)",
        "scenario",
        "ours msg/s",
        "MB/s",
        "base msg/s",
        "MB/s",
        "ratio",
        "ours CPU/msg",
        "base CPU/msg",
        "1-lane MB/s",
        "ratio1"
    );
    // DS_BENCH_FILTER=JSON runs only the scenarios whose name contains it.
    let filter = std::env::var("DS_BENCH_FILTER").unwrap_or_default();
    for scenario in scenarios.iter().filter(|s| s.name.contains(&filter)) {
        let mut ours = Vec::new();
        let mut base = Vec::new();
        let mut single = Vec::new();
        for round in 0..ROUNDS {
            ours.push(runtime.block_on(run_ours(&server, scenario, round)));
            base.push(runtime.block_on(run_baseline(&server, scenario, round, LANES)));
            single.push(runtime.block_on(run_baseline(&server, scenario, round, 1)));
        }
        report(scenario, &mut ours, &mut base, &mut single);
    }
}

fn report(s: &Scenario, ours: &mut [Sample], base: &mut [Sample], single: &mut [Sample]) {
    let median = |v: &mut [Sample]| {
        v.sort_by_key(|x| x.elapsed);
        (v[v.len() / 2].elapsed, v[v.len() / 2].cpu)
    };
    let spread = |v: &[Sample]| {
        format!(
            "{:.3}-{:.3}",
            v[0].elapsed.as_secs_f64(),
            v[v.len() - 1].elapsed.as_secs_f64()
        )
    };
    let (oe, oc) = median(ours);
    let (be, bc) = median(base);
    let (se, _) = median(single);
    let bytes = (s.count * s.size) as f64;
    let rate = |d: Duration| s.count as f64 / d.as_secs_f64();
    let mbps = |d: Duration| bytes / d.as_secs_f64() / 1e6;
    let per_msg = |c: Duration| {
        // Nanoseconds: the per-message figures are tens of them.
        let ns = c.as_secs_f64() * 1e9 / s.count as f64;
        format!("{ns:.0} ns")
    };
    println!(
        "{:<24} {:>12.0} {:>9.1} {:>12.0} {:>9.1} {:>6.2}x {:>14} {:>14} {:>10.1} {:>7.2}x  {} / {}",
        s.name,
        rate(oe),
        mbps(oe),
        rate(be),
        mbps(be),
        be.as_secs_f64() / oe.as_secs_f64(),
        per_msg(oc),
        per_msg(bc),
        mbps(se),
        se.as_secs_f64() / oe.as_secs_f64(),
        spread(ours),
        spread(base),
    );
}

fn message(payload: Payload, size: usize, i: usize) -> Bytes {
    match payload {
        // A JSON string of exactly `size` bytes once encoded.
        Payload::Json => Bytes::from(format!("\"{}\"", json_value(size, i))),
        Payload::Bytes => {
            let mut v = Vec::with_capacity(size);
            test_servers::write_bench_message(&mut v, size, i);
            Bytes::from(v)
        }
    }
}

/// A string whose JSON encoding is exactly `size` bytes.
fn json_value(size: usize, i: usize) -> String {
    format!("{i:0width$}", width = size - 2)
}

fn content_type(payload: Payload) -> &'static str {
    match payload {
        Payload::Json => "application/json",
        Payload::Bytes => "application/octet-stream",
    }
}

async fn fresh_stream(server: &TestServer, client: &Client, payload: Payload) -> Stream {
    let s = client
        .stream(server.unique_stream_url("bench"))
        .expect("url");
    s.create_with(CreateOptions::new().content_type(content_type(payload)))
        .await
        .expect("create");
    s
}

async fn run_ours(server: &TestServer, s: &Scenario, round: usize) -> Sample {
    let client = Client::new();
    let stream = fresh_stream(server, &client, s.payload).await;
    // Messages are prepared before the clock starts, as for the baseline:
    // bytes for byte streams, values for JSON streams (encoded by the
    // producer straight into its batch, as an application would). The
    // slice scenario writes each into one reused buffer as it goes.
    let messages: Vec<Bytes> = match (s.how, s.payload) {
        (How::Slice | How::Feed | How::Writer, _) | (_, Payload::Json) => Vec::new(),
        _ => (0..s.count)
            .map(|i| message(s.payload, s.size, i))
            .collect(),
    };
    let values: Vec<String> = match s.payload {
        Payload::Json => (0..s.count).map(|i| json_value(s.size, i)).collect(),
        Payload::Bytes => Vec::new(),
    };
    let producer = Producer::builder(&stream, format!("bench-{round}"))
        .build()
        .expect("producer");
    let cpu0 = test_servers::process_cpu_time();
    let started = Instant::now();
    // Backpressure only; acknowledgements are checked by close().
    match s.payload {
        Payload::Json if s.how == How::Writer => {
            let mut writer = producer.writer();
            for v in &values {
                writer.write_json(v.as_str()).await.expect("write_json");
            }
            writer.flush().await.expect("writer flush");
        }
        Payload::Json if s.how == How::Feed => {
            for v in &values {
                producer.feed_json(v.as_str()).await.expect("feed_json");
            }
        }
        Payload::Json => {
            for v in &values {
                drop(producer.send_json(v.as_str()).await.expect("send"));
            }
        }
        Payload::Bytes if s.how == How::Many => {
            drop(producer.send_many(messages).await.expect("send_many"));
        }
        Payload::Bytes if s.how == How::Slice => {
            // The caller writes each message into one buffer it reuses.
            let mut buffer = Vec::with_capacity(s.size);
            for i in 0..s.count {
                test_servers::write_bench_message(&mut buffer, s.size, i);
                drop(producer.send_slice(&buffer).await.expect("send_slice"));
            }
        }
        Payload::Bytes if s.how == How::Writer => {
            let mut writer = producer.writer();
            let mut buffer = Vec::with_capacity(s.size);
            for i in 0..s.count {
                test_servers::write_bench_message(&mut buffer, s.size, i);
                writer.write(&buffer).await.expect("write");
            }
            writer.flush().await.expect("writer flush");
        }
        Payload::Bytes if s.how == How::Feed => {
            let mut buffer = Vec::with_capacity(s.size);
            for i in 0..s.count {
                test_servers::write_bench_message(&mut buffer, s.size, i);
                producer.feed_slice(&buffer).await.expect("feed_slice");
            }
        }
        Payload::Bytes => {
            for m in messages {
                drop(producer.send(m).await.expect("send"));
            }
        }
    }
    producer.close().await.expect("close");
    let sample = Sample {
        elapsed: started.elapsed(),
        cpu: test_servers::process_cpu_time() - cpu0,
    };
    verify_tail(&stream, s).await;
    sample
}

/// Bodies as the producer would build them: up to 1 MiB of payload each.
fn baseline_bodies(s: &Scenario) -> Vec<Bytes> {
    let mut bodies = Vec::new();
    let mut body = Vec::with_capacity(BATCH_BYTES + 1024);
    let mut payload = 0;
    let mut items = 0;
    let json = matches!(s.payload, Payload::Json);
    for i in 0..s.count {
        let m = message(s.payload, s.size, i);
        if items > 0 && payload + m.len() > BATCH_BYTES {
            if json {
                body.push(b']');
            }
            bodies.push(Bytes::from(std::mem::take(&mut body)));
            payload = 0;
            items = 0;
        }
        body.push(if items == 0 { b'[' } else { b',' });
        if !json {
            body.pop();
        }
        body.extend_from_slice(&m);
        payload += m.len();
        items += 1;
    }
    if json {
        body.push(b']');
    }
    bodies.push(Bytes::from(body));
    bodies
}

async fn run_baseline(
    server: &TestServer,
    s: &Scenario,
    round: usize,
    lane_count: usize,
) -> Sample {
    let client = Client::new();
    let stream = fresh_stream(server, &client, s.payload).await;
    let bodies = baseline_bodies(s);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let hyper: HyperClient<HttpConnector, Full<Bytes>> =
        HyperClient::builder(TokioExecutor::new()).build(connector);
    let url = stream.url().to_string();
    let mut lanes: Vec<Vec<Bytes>> = vec![Vec::new(); lane_count];
    for (i, body) in bodies.into_iter().enumerate() {
        lanes[i % lane_count].push(body);
    }
    let cpu0 = test_servers::process_cpu_time();
    let started = Instant::now();
    let tasks: Vec<_> = lanes
        .into_iter()
        .enumerate()
        .map(|(lane, bodies)| {
            let hyper = hyper.clone();
            let url = url.clone();
            let ct = content_type(s.payload);
            tokio::spawn(async move {
                for (seq, body) in bodies.into_iter().enumerate() {
                    let request = hyper::Request::post(url.as_str())
                        .header("content-type", ct)
                        .header("producer-id", format!("base-{round}-{lane_count}-{lane}"))
                        .header("producer-epoch", "0")
                        .header("producer-seq", seq.to_string())
                        .body(Full::new(body))
                        .expect("request");
                    let response = hyper.request(request).await.expect("post");
                    let status = response.status();
                    let _ = response.into_body().collect().await;
                    assert!(status.is_success(), "baseline POST answered {status}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("lane");
    }
    let sample = Sample {
        elapsed: started.elapsed(),
        cpu: test_servers::process_cpu_time() - cpu0,
    };
    verify_tail(&stream, s).await;
    sample
}

/// Every message arrived exactly once (outside the timed section); then
/// the stream goes, so that the server's memory does not grow with every
/// round (a gigabyte over a run) and slow the scenarios after.
async fn verify_tail(stream: &Stream, s: &Scenario) {
    match s.payload {
        Payload::Bytes => {
            // Counted chunk by chunk: more than a response may hold.
            let mut chunks = stream.read().bytes();
            let mut bytes = 0;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.expect("read back");
                bytes += chunk.data.len();
                if chunk.up_to_date {
                    break;
                }
            }
            assert_eq!(bytes, s.count * s.size, "bytes written for {}", s.name);
        }
        Payload::Json => {
            let items = stream
                .read_json::<serde::de::IgnoredAny>()
                .await
                .expect("read back");
            assert_eq!(items.len(), s.count, "messages written for {}", s.name);
        }
    }
    stream.delete().await.expect("delete the bench stream");
}
