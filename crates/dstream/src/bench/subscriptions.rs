//! Subscriptions (pull-wake): append-to-handler latency, and backlog
//! throughput with 1, 2 and 4 workers over 4 shards. The baseline is what
//! an application would do without subscriptions: a plain
//! [`Consumer`] per stream with the same handler.
//!
//! Only servers with subscriptions are measured (the Node reference
//! server); [`supported`] tells, and `dstream bench` skips the scenarios
//! with a note elsewhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use durable_streams_client::consumer::{Batch, Consumer, Flow, Handler, Json, StartFrom};
use durable_streams_client::subscription::{SubscriptionSpec, Subscriptions, Worker, WorkerHandle};
use durable_streams_client::{
    CreateOptions, ErrorKind, LiveMode, Result as ApiResult, Stream, SubscriptionErrorCode,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use super::Target;
use super::report::{Metric, Row};
use super::scenarios::{SETTLE, client, next_delivery};

/// Shards (subscriptions) of the throughput scenario.
pub const SHARDS: usize = 4;
/// Worker counts of the throughput scenario.
pub const WORKERS: [usize; 3] = [1, 2, 4];
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

fn api(what: &str) -> impl Fn(durable_streams_client::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// A small JSON event, decoded with serde by both sides.
#[derive(Debug, Serialize, Deserialize)]
struct Event {
    id: u64,
    user: String,
    ok: bool,
}

fn event(id: u64) -> Event {
    Event {
        id,
        user: format!("u{id}"),
        ok: true,
    }
}

/// A root-relative path nobody used before.
fn unique_path(t: &Target) -> String {
    let url = t.unique_url();
    url.rsplit('/').next().unwrap_or_default().to_owned()
}

fn subscriptions(t: &Target) -> Result<Subscriptions, String> {
    client()?
        .subscriptions(&t.base)
        .map_err(api("subscriptions"))
}

/// Whether the server implements subscriptions (`Err` for other failures).
pub async fn supported(t: &Target) -> Result<bool, String> {
    let subs = subscriptions(t)?;
    match subs.get("dstream-bench-probe").await {
        Ok(_) => Ok(true),
        Err(e) => match e.kind() {
            ErrorKind::Subscription {
                code: SubscriptionErrorCode::NotFound,
            } => Ok(true),
            ErrorKind::Unsupported { .. } => Ok(false),
            _ => Err(format!("subscription probe: {e}")),
        },
    }
}

async fn json_stream(subs: &Subscriptions, path: &str) -> Result<Stream, String> {
    let s = subs.stream(path).map_err(api("stream path"))?;
    s.create_with(CreateOptions::json())
        .await
        .map_err(api("create"))?;
    Ok(s)
}

/// Sends the time each batch reached the handler.
struct Stamp(mpsc::UnboundedSender<Instant>);

impl Handler for Stamp {
    type Format = Json<Event>;

    async fn handle_batch(&mut self, _batch: &Batch<Event>) -> ApiResult<Flow> {
        let _ = self.0.send(Instant::now());
        Ok(Flow::Continue)
    }
}

/// Counts events; wakes `done` once `total` were handled.
#[derive(Clone)]
struct Count {
    seen: Arc<AtomicU64>,
    total: u64,
    done: Arc<Notify>,
}

impl Count {
    fn new(total: u64) -> Count {
        Count {
            seen: Arc::default(),
            total,
            done: Arc::default(),
        }
    }

    async fn wait(&self, what: &str) -> Result<(), String> {
        tokio::time::timeout(DRAIN_TIMEOUT, self.done.notified())
            .await
            .map_err(|_| {
                format!(
                    "{what}: only {} of {} events within {DRAIN_TIMEOUT:?}",
                    self.seen.load(Ordering::Relaxed),
                    self.total
                )
            })
    }
}

impl Handler for Count {
    type Format = Json<Event>;

    async fn handle_batch(&mut self, batch: &Batch<Event>) -> ApiResult<Flow> {
        let n = batch.items.len() as u64;
        if self.seen.fetch_add(n, Ordering::Relaxed) + n >= self.total {
            self.done.notify_one();
        }
        Ok(Flow::Continue)
    }
}

/// Wait until the worker acked `n` wakes (it is idle again).
async fn completed(worker: &WorkerHandle, n: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while worker.stats().completed < n {
        if Instant::now() > deadline {
            return Err(format!(
                "the worker did not ack wake {n} within 20 s: {:?}",
                worker.stats()
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Append-to-handler latency: one event appended to a stream of a
/// pull-wake subscription, time until the worker's handler has it (wake
/// event, claim, read); the worker acks before the next sample. Baseline: a
/// live consumer of the stream (`LiveMode::Auto`) with the same handler.
pub async fn latency(t: &Target) -> Result<Vec<Row>, String> {
    let subs = subscriptions(t)?;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..t.rounds {
        let prefix = unique_path(t);
        let (path, wake, id) = (
            format!("{prefix}/s"),
            format!("{prefix}-wake"),
            format!("{prefix}-sub"),
        );
        let stream = json_stream(&subs, &path).await?;
        json_stream(&subs, &wake).await?;
        subs.create(&id, &SubscriptionSpec::pull_wake(&wake).stream(&path))
            .await
            .map_err(api("subscription create"))?;

        // Ours: a pull-wake worker.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let worker = Worker::builder(&subs, Stamp(tx))
            .subscription(&id)
            .wake_stream(&wake)
            .start()
            .await
            .map_err(api("worker"))?;
        for i in 0..=t.samples {
            let us = timed_append(&stream, i, SETTLE, &mut rx).await?;
            if i > 0 {
                ours.push(us);
            }
            completed(&worker, i as u64 + 1).await?;
        }
        worker.shutdown().await.map_err(api("worker shutdown"))?;
        subs.delete(&id).await.map_err(api("subscription delete"))?;

        // Baseline: a live consumer at the tail of the same stream.
        base.extend(consumer_latency(t, &stream).await?);
        for s in [&path, &wake] {
            let _ = subs.stream(s).map_err(api("stream path"))?.delete().await;
        }
    }
    let mut row =
        Row::new(&t.label, "sub-latency", Metric::Latency, "us", ours, base).ok_or("no samples")?;
    row.params = format!(
        "{} x {} single-event appends to a pull-wake subscription's stream, until the worker's handler has it (the worker acks before the next); baseline: a live consumer (auto: SSE) of the stream",
        t.rounds, t.samples
    );
    Ok(vec![row])
}

/// One latency sample: settle for `settle`, append event `i` to `stream`,
/// and time until `rx` reports the delivery (µs).
async fn timed_append(
    stream: &Stream,
    i: usize,
    settle: Duration,
    rx: &mut mpsc::UnboundedReceiver<Instant>,
) -> Result<f64, String> {
    tokio::time::sleep(settle).await;
    let start = Instant::now();
    stream
        .append_json(&event(i as u64))
        .await
        .map_err(api("append"))?;
    let at = next_delivery(rx).await?;
    Ok(at.duration_since(start).as_secs_f64() * 1e6)
}

/// The latency baseline of the `sub-*` scenarios: single-event appends to
/// `stream`, each timed until a live consumer at its tail (`LiveMode::Auto`)
/// has it; the first sample (connection warm-up) is dropped.
async fn consumer_latency(t: &Target, stream: &Stream) -> Result<Vec<f64>, String> {
    let tail = stream.head().await.map_err(api("head"))?.next_offset;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = Consumer::builder(stream, Stamp(tx))
        .start_from(StartFrom::Offset(tail))
        .live(LiveMode::Auto)
        .build()
        .map_err(api("consumer"))?
        .spawn();
    let mut samples = Vec::with_capacity(t.samples);
    for i in 0..=t.samples {
        let us = timed_append(stream, i, SETTLE, &mut rx).await?;
        if i > 0 {
            samples.push(us);
        }
    }
    consumer.abort();
    Ok(samples)
}

/// One throughput set: `SHARDS` subscriptions, each over `per_shard` JSON
/// streams (pattern `<prefix>/<k>/*`), with `events` spread over the streams.
struct Set {
    prefix: String,
    ids: Vec<String>,
    wake: String,
    streams: Vec<Stream>,
}

async fn build_set(
    t: &Target,
    subs: &Subscriptions,
    per_shard: usize,
    events: usize,
) -> Result<Set, String> {
    let prefix = unique_path(t);
    let wake = format!("{prefix}-wake");
    json_stream(subs, &wake).await?;
    let mut streams = Vec::new();
    let mut ids = Vec::new();
    for k in 0..SHARDS {
        for i in 0..per_shard {
            streams.push(json_stream(subs, &format!("{prefix}/{k}/s{i}")).await?);
        }
        let id = format!("{prefix}-{k}");
        // Streams are linked at their tail: create before appending.
        subs.create(
            &id,
            &SubscriptionSpec::pull_wake(&wake).pattern(format!("{prefix}/{k}/*")),
        )
        .await
        .map_err(api("subscription create"))?;
        ids.push(id);
    }
    let per_stream = events.div_ceil(streams.len());
    let mut next = 0u64;
    for s in &streams {
        for chunk_start in (0..per_stream).step_by(1_000) {
            let n = (per_stream - chunk_start).min(1_000);
            let batch: Vec<Event> = (0..n)
                .map(|_| {
                    next += 1;
                    event(next)
                })
                .collect();
            s.append_json_batch(batch.iter())
                .await
                .map_err(api("append"))?;
        }
    }
    Ok(Set {
        prefix,
        ids,
        wake,
        streams,
    })
}

impl Set {
    fn events(&self, per_stream: usize) -> u64 {
        (self.streams.len() * per_stream) as u64
    }

    async fn remove(self, subs: &Subscriptions) {
        for id in &self.ids {
            let _ = subs.delete(id).await;
        }
        for s in &self.streams {
            let _ = s.delete().await;
        }
        if let Ok(w) = subs.stream(&self.wake) {
            let _ = w.delete().await;
        }
    }
}

/// `workers` in-process workers drain the set; events/s.
async fn drain_with_workers(
    subs: &Subscriptions,
    set: &Set,
    workers: usize,
    total: u64,
) -> Result<f64, String> {
    let count = Count::new(total);
    let start = Instant::now();
    let mut handles = Vec::new();
    for w in 0..workers {
        handles.push(
            Worker::builder(subs, count.clone())
                .subscriptions(set.ids.iter().cloned())
                .wake_stream(&set.wake)
                .name(format!("{}-w{w}", set.prefix))
                .start()
                .await
                .map_err(api("worker"))?,
        );
    }
    count.wait(&format!("{workers} worker(s)")).await?;
    let rate = total as f64 / start.elapsed().as_secs_f64();
    for h in handles {
        h.shutdown().await.map_err(api("worker shutdown"))?;
    }
    Ok(rate)
}

/// One plain consumer per stream reads the set from the start; events/s.
async fn drain_with_consumers(set: &Set, total: u64) -> Result<f64, String> {
    let count = Count::new(total);
    let start = Instant::now();
    let handles: Vec<_> = set
        .streams
        .iter()
        .map(|s| {
            Consumer::builder(s, count.clone())
                .start_from(StartFrom::Start)
                .live(LiveMode::Off)
                .build()
                .map(Consumer::spawn)
        })
        .collect::<ApiResult<_>>()
        .map_err(api("consumer"))?;
    count.wait("consumers").await?;
    let rate = total as f64 / start.elapsed().as_secs_f64();
    for h in handles {
        h.shutdown().await.map_err(api("consumer shutdown"))?;
    }
    Ok(rate)
}

/// Backlog throughput: `events` JSON events over `SHARDS` x `per_shard`
/// streams are appended, then 1, 2 and 4 in-process pull-wake workers
/// (serving all shards) drain them, timed until the handlers saw every
/// event. Baseline: one plain consumer per stream reading the same events.
pub async fn throughput(t: &Target, per_shard: usize, events: usize) -> Result<Vec<Row>, String> {
    let subs = subscriptions(t)?;
    let per_stream = events.div_ceil(SHARDS * per_shard);
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); WORKERS.len()];
    let mut base = Vec::new();
    let mut total = 0;
    for _ in 0..t.rounds {
        for (slot, &workers) in WORKERS.iter().enumerate() {
            let set = build_set(t, &subs, per_shard, events).await?;
            total = set.events(per_stream);
            ours[slot].push(drain_with_workers(&subs, &set, workers, total).await?);
            if workers == WORKERS[WORKERS.len() - 1] {
                base.push(drain_with_consumers(&set, total).await?);
            }
            set.remove(&subs).await;
        }
    }
    let mut rows = Vec::new();
    for (slot, &workers) in WORKERS.iter().enumerate() {
        let mut row = Row::new(
            &t.label,
            format!("sub-throughput-{workers}w"),
            Metric::Throughput,
            "msg/s",
            std::mem::take(&mut ours[slot]),
            base.clone(),
        )
        .ok_or("no rounds")?;
        row.params = format!(
            "{} rounds: {total} JSON events over {SHARDS} pull-wake subscriptions x {per_shard} streams, drained by {workers} in-process worker(s); baseline: one plain consumer per stream (catch-up) reading the same events",
            t.rounds
        );
        rows.push(row);
    }
    Ok(rows)
}

/// A webhook receiver on 127.0.0.1 for the latency scenario: verifies each
/// delivery, reads the pending ranges with the library's reader, stamps
/// the time, and answers `{"done": true}` (the server then acks).
struct Receiver {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn webhook_receiver(
    subs: Subscriptions,
    stamps: mpsc::UnboundedSender<Instant>,
) -> Result<Receiver, String> {
    use durable_streams_client::subscription::{WebhookResponse, WebhookVerifier};
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("webhook receiver: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("webhook receiver: {e}"))?;
    let verifier = Arc::new(WebhookVerifier::new(&subs));
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (subs, verifier, stamps) = (subs.clone(), Arc::clone(&verifier), stamps.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (subs, verifier, stamps) =
                        (subs.clone(), Arc::clone(&verifier), stamps.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let signature = parts
                            .headers
                            .get("webhook-signature")
                            .and_then(|v| v.to_str().ok());
                        let answer = match verifier.verify_signature(signature, &body).await {
                            Ok(wake) => {
                                for p in wake.pending() {
                                    if let Ok(stream) = subs.stream(&p.path) {
                                        let mut read = stream
                                            .read()
                                            .offset(p.acked_offset.clone())
                                            .json::<Event>();
                                        while let Some(Ok(_)) =
                                            futures::StreamExt::next(&mut read).await
                                        {
                                        }
                                    }
                                }
                                let _ = stamps.send(Instant::now());
                                WebhookResponse::done()
                            }
                            Err(_) => {
                                return hyper::Response::builder()
                                    .status(401)
                                    .body(Full::new(bytes::Bytes::new()));
                            }
                        };
                        hyper::Response::builder()
                            .status(answer.status())
                            .header("content-type", answer.content_type())
                            .body(Full::new(bytes::Bytes::from_static(answer.body())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(Receiver {
        url: format!("http://{addr}/hook"),
        task,
    })
}

/// Append-to-handler latency through webhook delivery: one event appended
/// to the stream of a webhook subscription, time until the receiver
/// verified the signed notification and read the event. Baseline: a live
/// consumer of the stream, as for `sub-latency`.
pub async fn webhook_latency(t: &Target) -> Result<Vec<Row>, String> {
    let subs = subscriptions(t)?;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..t.rounds {
        let prefix = unique_path(t);
        let (path, id) = (format!("{prefix}/s"), format!("{prefix}-hook"));
        let stream = json_stream(&subs, &path).await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let receiver = webhook_receiver(subs.clone(), tx).await?;
        subs.create(&id, &SubscriptionSpec::webhook(&receiver.url).stream(&path))
            .await
            .map_err(api("webhook subscription create"))?;
        for i in 0..=t.samples {
            // The previous wake's `done` must reach the server first.
            let us = timed_append(&stream, i, SETTLE * 2, &mut rx).await?;
            if i > 0 {
                ours.push(us);
            }
        }
        subs.delete(&id).await.map_err(api("subscription delete"))?;
        drop(receiver);

        base.extend(consumer_latency(t, &stream).await?);
        let _ = stream.delete().await;
    }
    let mut row = Row::new(
        &t.label,
        "sub-webhook-latency",
        Metric::Latency,
        "us",
        ours,
        base,
    )
    .ok_or("no samples")?;
    row.params = format!(
        "{} x {} single-event appends to a webhook subscription's stream, until the receiver (127.0.0.1, hyper) verified the Ed25519 signature and read the event, answering done; baseline: a live consumer (auto: SSE) of the stream",
        t.rounds, t.samples
    );
    Ok(vec![row])
}
