//! The `benchmark` command (ADAPTER.md §9). Only the operation inside the
//! timed window is measured.

use std::time::Instant;

use bytes::Bytes;
use durable_streams_client::{AppendOptions, CreateOptions, LiveMode, Offset, Producer, Stream};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::commands::{Reply, State};
use crate::errors::Failure;
use crate::read::{self, ReadPlan};

/// Largest body one `throughput_append` request carries. The library has no
/// batching producer yet, so the adapter concatenates messages itself.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Benchmark {
    iteration_id: String,
    operation: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Operation {
    op: String,
    path: String,
    size: Option<u64>,
    offset: Option<String>,
    live: Option<Value>,
    content_type: Option<String>,
    count: Option<u64>,
}

/// Metrics of one measured operation.
#[derive(Default)]
struct Measured {
    nanos: u128,
    messages: Option<u64>,
    bytes: Option<u64>,
}

fn fail(path: &str) -> impl Fn(durable_streams_client::Error) -> Failure + '_ {
    move |e| Failure::from_client(&e, path, false)
}

/// `benchmark`.
pub async fn benchmark(state: &mut State, command: &Value) -> Reply {
    let cmd: Benchmark = Benchmark::deserialize(command)
        .map_err(|e| Failure::invalid_argument(format!("bad benchmark command: {e}")))?;
    let op: Operation = Operation::deserialize(&cmd.operation)
        .map_err(|e| Failure::invalid_argument(format!("bad benchmark operation: {e}")))?;
    let measured = match op.op.as_str() {
        "append" => append(state, &op).await?,
        "read" => read_all(state, &op).await?,
        "roundtrip" => roundtrip(state, &op).await?,
        "create" => create(state, &op).await?,
        "throughput_append" => throughput_append(state, &op).await?,
        "throughput_read" => throughput_read(state, &op).await?,
        other => {
            return Err(Failure::not_supported(format!(
                "benchmark operation {other:?}"
            )));
        }
    };
    let mut reply = json!({
        "type": "benchmark",
        "success": true,
        "iterationId": cmd.iteration_id,
        "durationNs": measured.nanos.to_string(),
    });
    if measured.messages.is_some() || measured.bytes.is_some() {
        let mut metrics = json!({});
        if let Some(m) = measured.messages {
            metrics["messagesProcessed"] = json!(m);
        }
        if let Some(b) = measured.bytes {
            metrics["bytesTransferred"] = json!(b);
        }
        reply["metrics"] = metrics;
    }
    Ok(reply)
}

/// A handle whose content type is known, learning it (untimed) if needed.
async fn known_stream(state: &mut State, path: &str) -> Result<Stream, Failure> {
    let stream = state.bench_stream(path)?;
    if stream.content_type().is_some() {
        return Ok(stream);
    }
    let info = stream.head().await.map_err(fail(path))?;
    if let Some(ct) = &info.content_type {
        state.remember_content_type(path, ct);
    }
    state.bench_stream(path)
}

fn payload(size: u64, json: bool) -> Bytes {
    let size = size as usize;
    if json {
        // `{"d":"***"}`: valid JSON of about `size` bytes.
        let fill = size.saturating_sub(8).max(1);
        Bytes::from(format!("{{\"d\":\"{}\"}}", "*".repeat(fill)))
    } else {
        Bytes::from(vec![0x2A; size.max(1)])
    }
}

async fn append(state: &mut State, op: &Operation) -> Result<Measured, Failure> {
    let stream = known_stream(state, &op.path).await?;
    let json = stream.content_type().is_some_and(|ct| ct.contains("json"));
    let body = payload(op.size.unwrap_or(100), json);
    let started = Instant::now();
    stream
        .append_with(body, AppendOptions::default())
        .await
        .map_err(fail(&op.path))?;
    Ok(Measured {
        nanos: started.elapsed().as_nanos(),
        ..Measured::default()
    })
}

async fn read_all(state: &mut State, op: &Operation) -> Result<Measured, Failure> {
    let stream = state.bench_stream(&op.path)?;
    let start = op.offset.clone().unwrap_or_else(|| "-1".to_owned());
    let offset =
        Offset::parse(&start).map_err(|e| Failure::from_client(&e.into(), &op.path, true))?;
    let started = Instant::now();
    let bytes = stream
        .read()
        .offset(offset)
        .collect_bytes()
        .await
        .map_err(fail(&op.path))?;
    Ok(Measured {
        nanos: started.elapsed().as_nanos(),
        messages: Some(1),
        bytes: Some(bytes.len() as u64),
    })
}

async fn create(state: &mut State, op: &Operation) -> Result<Measured, Failure> {
    let ct = op
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let stream = state.bench_stream(&op.path)?;
    let started = Instant::now();
    stream
        .create_with(CreateOptions::new().content_type(ct.clone()))
        .await
        .map_err(fail(&op.path))?;
    let nanos = started.elapsed().as_nanos();
    state.remember_content_type(&op.path, &ct);
    Ok(Measured {
        nanos,
        ..Measured::default()
    })
}

/// Create, start a live read, append, stop at the first non-empty delivery.
async fn roundtrip(state: &mut State, op: &Operation) -> Result<Measured, Failure> {
    let ct = op
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let json = ct.contains("json");
    let live = match read::live_mode(op.live.as_ref()).map_err(Failure::invalid_argument)? {
        LiveMode::Off => LiveMode::LongPoll,
        mode => mode,
    };
    let body = payload(op.size.unwrap_or(100), json);
    let stream = state.bench_stream(&op.path)?;
    let started = Instant::now();
    let created = stream
        .create_with(CreateOptions::new().content_type(ct.clone()))
        .await
        .map_err(fail(&op.path))?;
    state.remember_content_type(&op.path, &ct);
    let stream = stream.with_content_type(ct);
    let from = created.next_offset.unwrap_or_else(Offset::start);
    let mut chunks = stream.read().offset(from).live(live).bytes();
    let reader = async {
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            let empty = chunk.data.is_empty() || (json && chunk.data.as_ref() == b"[]");
            if !empty || chunk.closed {
                return Ok(());
            }
        }
        Ok(())
    };
    let writer = stream.append_with(body, AppendOptions::default());
    let (read, written) = tokio::join!(reader, writer);
    written.map_err(fail(&op.path))?;
    read.map_err(fail(&op.path))?;
    Ok(Measured {
        nanos: started.elapsed().as_nanos(),
        ..Measured::default()
    })
}

async fn throughput_append(state: &mut State, op: &Operation) -> Result<Measured, Failure> {
    let count = op.count.unwrap_or(1000);
    let size = op.size.unwrap_or(100).max(1);
    // The runner does not create this path; later iterations reuse it.
    let stream = state.bench_stream(&op.path)?;
    stream
        .create_with(CreateOptions::new().content_type("application/octet-stream"))
        .await
        .map_err(fail(&op.path))?;
    state.remember_content_type(&op.path, "application/octet-stream");
    let stream = state.bench_stream(&op.path)?;
    // A fresh producer id per iteration: with a fixed (id, epoch) every
    // iteration after the first would be deduplicated by the server and
    // measure nothing (ADAPTER.md section 9, pitfall 1).
    let producer = Producer::builder(&stream, fresh_producer_id())
        .build()
        .map_err(fail(&op.path))?;
    let message = Bytes::from(vec![0x2Au8; size as usize]);
    let started = Instant::now();
    for _ in 0..count {
        // Backpressure only; close() below waits for every acknowledgement.
        drop(
            producer
                .send(message.clone())
                .await
                .map_err(fail(&op.path))?,
        );
    }
    producer.close().await.map_err(fail(&op.path))?;
    Ok(Measured {
        nanos: started.elapsed().as_nanos(),
        messages: Some(count),
        bytes: Some(count * size),
    })
}

/// A producer id no earlier iteration (or earlier adapter run) used.
fn fresh_producer_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("bench-{}-{nanos}-{n}", std::process::id())
}

async fn throughput_read(state: &mut State, op: &Operation) -> Result<Measured, Failure> {
    let stream = state.bench_stream(&op.path)?;
    let plan = ReadPlan::new(LiveMode::Off, "-1".to_owned(), None, None, false);
    let started = Instant::now();
    let outcome = read::run(stream.read(), true, &plan)
        .await
        .map_err(fail(&op.path))?;
    Ok(Measured {
        nanos: started.elapsed().as_nanos(),
        messages: Some(outcome.messages),
        bytes: Some(outcome.bytes),
    })
}
