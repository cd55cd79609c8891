//! The scenarios: each runs the library ("ours") and the raw hyper baseline
//! alternately, `rounds` times, against the same server; latency scenarios
//! alternate sample by sample.

use std::time::{Duration, Instant};

use bytes::Bytes;
use durable_streams_client::{Client, CreateOptions, LiveMode, Offset, Producer, Stream};
use futures::StreamExt;
use hyper::Method;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::raw::{self, Raw};
use super::report::{Metric, Row};
use super::{Target, micros};

const OCTET: &str = "application/octet-stream";
const TEXT: &str = "text/plain";
const JSON: &str = "application/json";
/// Producer lanes of the baseline = the producer's default `max_in_flight`.
pub const LANES: usize = durable_streams_client::DEFAULT_MAX_IN_FLIGHT;
/// How long a live reader gets to re-arm (issue its next request) before
/// the next append of a roundtrip sample.
pub(super) const SETTLE: Duration = Duration::from_millis(5);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

fn api(what: &str) -> impl Fn(durable_streams_client::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The library's client as an application would build it.
pub fn client() -> Result<Client, String> {
    client_builder().build().map_err(|e| format!("client: {e}"))
}

/// The settings every benchmark client starts from.
pub fn client_builder() -> durable_streams_client::ClientBuilder {
    Client::builder().user_agent(concat!("dstream-bench/", env!("CARGO_PKG_VERSION")))
}

async fn fresh(t: &Target, client: &Client, ct: &str) -> Result<Stream, String> {
    let s = client.stream(t.unique_url()).map_err(api("stream url"))?;
    s.create_with(CreateOptions::new().content_type(ct))
        .await
        .map_err(api("create"))?;
    Ok(s)
}

async fn fresh_raw(t: &Target, raw: &Raw, ct: &str) -> Result<String, String> {
    let url = t.unique_url();
    raw::send_ok(
        raw,
        Method::PUT,
        &url,
        &[("content-type", ct)],
        Bytes::new(),
    )
    .await?;
    Ok(url)
}

fn latency_row(t: &Target, name: &str, params: String, ours: Vec<f64>, base: Vec<f64>) -> Row {
    let mut row = Row::new(&t.label, name, Metric::Latency, "us", ours, base)
        .expect("latency scenarios take at least one sample");
    row.params = params;
    row
}

/// Take samples of `ours` and `base` in turn, one of each at a time,
/// the first of each pair alternating: a slow spell of a shared machine
/// then falls on both alike, where blocks of samples (a round of ours,
/// then a round of the baseline) would give it to one side. The first
/// pair warms up and is not kept.
async fn interleaved(
    samples: usize,
    mut ours: impl AsyncFnMut() -> Result<f64, String>,
    mut base: impl AsyncFnMut() -> Result<f64, String>,
    kept: (&mut Vec<f64>, &mut Vec<f64>),
) -> Result<(), String> {
    for i in 0..=samples {
        let (o, b) = if i % 2 == 0 {
            let o = ours().await?;
            (o, base().await?)
        } else {
            let b = base().await?;
            (ours().await?, b)
        };
        if i > 0 {
            kept.0.push(o);
            kept.1.push(b);
        }
    }
    Ok(())
}

/// Sequential 100 B appends.
pub async fn append_latency(t: &Target) -> Result<Vec<Row>, String> {
    let client = client()?;
    let raw = raw::client();
    let payload = Bytes::from(vec![b'x'; 100]);
    let h = [("content-type", OCTET)];
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..t.rounds {
        let s = fresh(t, &client, OCTET).await?;
        let url = fresh_raw(t, &raw, OCTET).await?;
        interleaved(
            t.samples,
            async || {
                let start = Instant::now();
                s.append(payload.clone()).await.map_err(api("append"))?;
                Ok(micros(start))
            },
            async || {
                let start = Instant::now();
                raw::send_ok(&raw, Method::POST, &url, &h, payload.clone()).await?;
                Ok(micros(start))
            },
            (&mut ours, &mut base),
        )
        .await?;
    }
    let params = format!("{} x {} sequential appends of 100 B", t.rounds, t.samples);
    Ok(vec![latency_row(t, "append-100B", params, ours, base)])
}

/// Catch-up read of a whole 10 KiB stream.
pub async fn read_latency(t: &Target) -> Result<Vec<Row>, String> {
    let client = client()?;
    let raw = raw::client();
    let data = Bytes::from(
        (0..10 * 1024)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..t.rounds {
        let s = fresh(t, &client, OCTET).await?;
        s.append(data.clone()).await.map_err(api("append"))?;
        let url = s.url().as_str();
        interleaved(
            t.samples,
            async || {
                let start = Instant::now();
                let got = s.read_bytes().await.map_err(api("read"))?;
                let took = micros(start);
                if got.len() != data.len() {
                    return Err(format!("read {} bytes, expected {}", got.len(), data.len()));
                }
                Ok(took)
            },
            async || {
                let start = Instant::now();
                let mut n = 0;
                raw::read_all(&raw, url, |b| {
                    n += b.len();
                    Ok(())
                })
                .await?;
                let took = micros(start);
                if n != data.len() {
                    return Err(format!("baseline read {n} bytes, expected {}", data.len()));
                }
                Ok(took)
            },
            (&mut ours, &mut base),
        )
        .await?;
    }
    let params = format!("{} x {} reads of a 10 KiB stream", t.rounds, t.samples);
    Ok(vec![latency_row(
        t,
        "catchup-read-10KiB",
        params,
        ours,
        base,
    )])
}

/// Stream creation (PUT of a new stream).
pub async fn create_latency(t: &Target) -> Result<Vec<Row>, String> {
    let client = client()?;
    let raw = raw::client();
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..t.rounds {
        interleaved(
            t.samples,
            async || {
                let s = client.stream(t.unique_url()).map_err(api("stream url"))?;
                let start = Instant::now();
                s.create_with(CreateOptions::new().content_type(OCTET))
                    .await
                    .map_err(api("create"))?;
                Ok(micros(start))
            },
            async || {
                let url = t.unique_url();
                let start = Instant::now();
                raw::send_ok(
                    &raw,
                    Method::PUT,
                    &url,
                    &[("content-type", OCTET)],
                    Bytes::new(),
                )
                .await?;
                Ok(micros(start))
            },
            (&mut ours, &mut base),
        )
        .await?;
    }
    let params = format!("{} x {} creates", t.rounds, t.samples);
    Ok(vec![latency_row(t, "create", params, ours, base)])
}

pub(super) async fn next_delivery(
    rx: &mut mpsc::UnboundedReceiver<Instant>,
) -> Result<Instant, String> {
    match tokio::time::timeout(DELIVERY_TIMEOUT, rx.recv()).await {
        Ok(Some(at)) => Ok(at),
        Ok(None) => Err("the live reader ended".to_owned()),
        Err(_) => Err(format!("no delivery within {DELIVERY_TIMEOUT:?}")),
    }
}

/// Append-to-delivery roundtrip: a live reader waits at the tail, one
/// append, time until the reader has the data.
pub async fn roundtrip(t: &Target, live: LiveMode) -> Result<Vec<Row>, String> {
    let client = client()?;
    let raw = raw::client();
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..t.rounds {
        // Ours: the library's append and live read.
        let s = fresh(t, &client, TEXT).await?;
        let tail = s.head().await.map_err(api("head"))?.next_offset;
        let (tx, mut ours_rx) = mpsc::unbounded_channel();
        let mut reader = s.read().offset(tail).live(live).bytes();
        let mut tasks = vec![tokio::spawn(async move {
            while let Some(Ok(chunk)) = reader.next().await {
                if !chunk.data.is_empty() && tx.send(Instant::now()).is_err() {
                    break;
                }
            }
        })];

        // Baseline: raw POST and a raw long-poll loop or SSE connection,
        // waiting on a stream of its own meanwhile.
        let url = fresh_raw(t, &raw, TEXT).await?;
        let tail = raw::tail(&raw, &url).await?;
        let (tx, mut base_rx) = mpsc::unbounded_channel();
        if live == LiveMode::Sse {
            let (tx2, mut rx2) = mpsc::unbounded_channel();
            tasks.push(tokio::spawn(raw::sse_reader(
                raw.clone(),
                url.clone(),
                tail,
                0,
                tx2,
            )));
            tasks.push(tokio::spawn(async move {
                while let Some((_, at)) = rx2.recv().await {
                    if tx.send(at).is_err() {
                        break;
                    }
                }
            }));
        } else {
            tasks.push(tokio::spawn(raw::long_poll_reader(
                raw.clone(),
                url.clone(),
                tail,
                tx,
            )));
        }
        let h = [("content-type", TEXT)];
        let (mut appended, mut appended_raw) = (0, 0);
        let result = interleaved(
            t.samples,
            async || {
                tokio::time::sleep(SETTLE).await;
                let start = Instant::now();
                s.append(format!("m{appended}\n"))
                    .await
                    .map_err(api("append"))?;
                appended += 1;
                let at = next_delivery(&mut ours_rx).await?;
                Ok(at.duration_since(start).as_secs_f64() * 1e6)
            },
            async || {
                tokio::time::sleep(SETTLE).await;
                let start = Instant::now();
                let body = Bytes::from(format!("m{appended_raw}\n"));
                appended_raw += 1;
                raw::send_ok(&raw, Method::POST, &url, &h, body).await?;
                let at = next_delivery(&mut base_rx).await?;
                Ok(at.duration_since(start).as_secs_f64() * 1e6)
            },
            (&mut ours, &mut base),
        )
        .await;
        for task in tasks {
            task.abort();
        }
        result?;
    }
    let (name, how) = if live == LiveMode::Sse {
        ("roundtrip-sse", "SSE")
    } else {
        ("roundtrip-long-poll", "long-poll")
    };
    let params = format!(
        "{} x {} appends to a {how} reader waiting at the tail",
        t.rounds, t.samples
    );
    Ok(vec![latency_row(t, name, params, ours, base)])
}

fn message(size: usize, i: usize) -> Bytes {
    let mut v = Vec::with_capacity(size);
    test_servers::write_bench_message(&mut v, size, i);
    Bytes::from(v)
}

/// Producer bodies as the producer batches them: up to 1 MiB each.
fn producer_bodies(count: usize, size: usize) -> Vec<Bytes> {
    let max = durable_streams_client::DEFAULT_MAX_BATCH_BYTES;
    let mut bodies = Vec::new();
    let mut body = Vec::new();
    for i in 0..count {
        let m = message(size, i);
        if !body.is_empty() && body.len() + m.len() > max {
            bodies.push(Bytes::from(std::mem::take(&mut body)));
        }
        body.extend_from_slice(&m);
    }
    if !body.is_empty() {
        bodies.push(Bytes::from(body));
    }
    bodies
}

/// How the producer scenario hands its messages over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceWith {
    /// `Producer::send`, one `Bytes` per message.
    Send,
    /// `ProducerWriter`s, each message written from one reused buffer:
    /// one per producer, with this many producers (producer ids) writing
    /// their share of the messages at once.
    Writers(usize),
}

impl ProduceWith {
    /// How many producers (producer ids) write at once.
    fn producer_ids(self) -> usize {
        match self {
            ProduceWith::Send => 1,
            ProduceWith::Writers(n) => n,
        }
    }
}

/// Producer throughput: `count` messages of `size` bytes through
/// `Producer::send` or a `ProducerWriter` (backpressure), vs pre-built
/// batch bodies posted by `LANES` concurrent raw producers.
pub async fn producer(
    t: &Target,
    name: &str,
    count: usize,
    size: usize,
    with: ProduceWith,
) -> Result<Vec<Row>, String> {
    let client = client()?;
    let raw = raw::client();
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    let (mut ours_cpu, mut base_cpu) = (Vec::new(), Vec::new());
    let (mut single, mut single_cpu) = (Vec::new(), Vec::new());
    // With several producer ids, only the baseline with several is alike.
    let baseline_count = if with.producer_ids() == 1 { 2 } else { 1 };
    for round in 0..t.rounds {
        // Who goes first turns with the round: what one run leaves the
        // server (garbage to collect, memory grown) falls on each alike.
        for turn in 0..=baseline_count {
            match (round + turn) % (baseline_count + 1) {
                0 => {
                    let (rate, cpu) =
                        produce_ours(t, &client, name, count, size, with, round).await?;
                    ours.push(rate);
                    ours_cpu.push(cpu);
                }
                1 => {
                    let (rate, cpu) = produce_raw(t, &raw, name, count, size, LANES, round).await?;
                    base.push(rate);
                    base_cpu.push(cpu);
                }
                _ => {
                    let (rate, cpu) = produce_raw(t, &raw, name, count, size, 1, round).await?;
                    single.push(rate);
                    single_cpu.push(cpu);
                }
            }
        }
    }
    let cpu = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        super::stats::median(&v) * 1e6 / count as f64
    };
    let via = match with {
        ProduceWith::Send => "Producer::send".to_owned(),
        ProduceWith::Writers(1) => "a ProducerWriter".to_owned(),
        ProduceWith::Writers(n) => {
            format!("{n} producers (producer ids), a ProducerWriter each, at once")
        }
    };
    let single_name = format!("{name}-1-lane");
    let mut rows = Vec::new();
    let baselines = [
        (
            name,
            base,
            &base_cpu,
            format!(
                "{LANES} raw producer lanes (one producer id each) posting 1 MiB batches at once"
            ),
        ),
        (
            single_name.as_str(),
            single,
            &single_cpu,
            "one raw producer id posting the same 1 MiB batches one at a time \
             (the server applies one producer's requests in order)"
                .to_owned(),
        ),
    ];
    for (scenario, baseline, baseline_cpu, what) in baselines.into_iter().take(baseline_count) {
        let mut row = Row::new(
            &t.label,
            scenario,
            Metric::Throughput,
            "msg/s",
            ours.clone(),
            baseline,
        )
        .ok_or("no rounds")?;
        let mb = |rate: f64| rate * size as f64 / 1e6;
        row.ours_mb_per_s = Some(mb(row.ours.p50));
        row.baseline_mb_per_s = Some(mb(row.baseline.p50));
        row.params = format!(
            "{} rounds of {count} x {size} B via {via}; baseline: {what}; \
             client CPU per message: ours {:.2} us, baseline {:.2} us",
            t.rounds,
            cpu(&ours_cpu),
            cpu(baseline_cpu)
        );
        rows.push(row);
    }
    Ok(rows)
}

/// One round of the library's producer: messages per second and client
/// CPU seconds, after checking every byte arrived.
async fn produce_ours(
    t: &Target,
    client: &Client,
    name: &str,
    count: usize,
    size: usize,
    with: ProduceWith,
    round: usize,
) -> Result<(f64, f64), String> {
    let ids = with.producer_ids();
    let s = fresh(t, client, OCTET).await?;
    let messages: Vec<Bytes> = match with {
        ProduceWith::Send => (0..count).map(|i| message(size, i)).collect(),
        ProduceWith::Writers(_) => Vec::new(),
    };
    let producers = (0..ids)
        .map(|id| {
            Producer::builder(&s, format!("bench-{}-{round}-{id}", std::process::id())).build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(api("producer"))?;
    let cpu0 = test_servers::process_cpu_time();
    let start = Instant::now();
    match with {
        ProduceWith::Send => {
            for m in messages {
                drop(producers[0].send(m).await.map_err(api("producer send"))?);
            }
        }
        ProduceWith::Writers(n) => {
            let shares = producers
                .iter()
                .enumerate()
                .map(|(id, producer)| async move {
                    let mut writer = producer.writer();
                    let mut buffer = Vec::with_capacity(size);
                    // Producer `id` writes messages id, id + n, id + 2n, ...
                    for i in (id..count).step_by(n) {
                        test_servers::write_bench_message(&mut buffer, size, i);
                        writer.write(&buffer).await.map_err(api("writer write"))?;
                    }
                    writer.flush().await.map_err(api("writer flush"))
                });
            for share in futures::future::join_all(shares).await {
                share?;
            }
        }
    }
    for producer in producers {
        producer.close().await.map_err(api("producer close"))?;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = (test_servers::process_cpu_time() - cpu0).as_secs_f64();
    let n = s.read_bytes().await.map_err(api("read back"))?.len();
    if n != count * size {
        return Err(format!(
            "{name}: producer wrote {n} bytes, expected {}",
            count * size
        ));
    }
    // Every round starts from a server of the same size.
    s.delete().await.map_err(api("delete"))?;
    Ok((count as f64 / secs, cpu))
}

/// One round of a raw baseline with `lanes` producer ids: messages per
/// second and client CPU seconds, after checking every byte arrived.
async fn produce_raw(
    t: &Target,
    raw: &Raw,
    name: &str,
    count: usize,
    size: usize,
    lanes: usize,
    round: usize,
) -> Result<(f64, f64), String> {
    let url = fresh_raw(t, raw, OCTET).await?;
    let (secs, cpu) = post_producer_lanes(raw, &url, count, size, lanes, round).await?;
    let mut n = 0;
    raw::read_all(raw, &url, |b| {
        n += b.len();
        Ok(())
    })
    .await?;
    if n != count * size {
        return Err(format!(
            "{name}: baseline ({lanes} lanes) wrote {n} bytes, expected {}",
            count * size
        ));
    }
    raw::send_ok(raw, Method::DELETE, &url, &[], Bytes::new()).await?;
    Ok((count as f64 / secs, cpu))
}

/// Post `count` x `size` B as 1 MiB producer batches over `lanes` producer
/// ids at once (each lane its ids' requests in order), returning the
/// elapsed seconds and this process's CPU seconds.
async fn post_producer_lanes(
    raw: &Raw,
    url: &str,
    count: usize,
    size: usize,
    lanes: usize,
    round: usize,
) -> Result<(f64, f64), String> {
    let mut bodies_per_lane: Vec<Vec<Bytes>> = vec![Vec::new(); lanes];
    for (i, body) in producer_bodies(count, size).into_iter().enumerate() {
        bodies_per_lane[i % lanes].push(body);
    }
    let cpu0 = test_servers::process_cpu_time();
    let start = Instant::now();
    let tasks: Vec<_> = bodies_per_lane
        .into_iter()
        .enumerate()
        .map(|(lane, bodies)| {
            let raw = raw.clone();
            let url = url.to_owned();
            let id = format!("base-{}-{round}-{lanes}-{lane}", std::process::id());
            tokio::spawn(async move {
                for (seq, body) in bodies.into_iter().enumerate() {
                    let seq = seq.to_string();
                    let h = [
                        ("content-type", OCTET),
                        ("producer-id", id.as_str()),
                        ("producer-epoch", "0"),
                        ("producer-seq", seq.as_str()),
                    ];
                    raw::send_ok(&raw, Method::POST, &url, &h, body).await?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| format!("baseline lane: {e}"))??;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((
        secs,
        (test_servers::process_cpu_time() - cpu0).as_secs_f64(),
    ))
}

/// A small JSON message, decoded with serde.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // the fields are decoded, not read
struct Msg {
    id: u64,
    user: String,
    ok: bool,
}

fn json_bodies(count: usize) -> Vec<Bytes> {
    let per_body = 10_000;
    (0..count)
        .step_by(per_body)
        .map(|first| {
            let mut body = String::from("[");
            for id in first..(first + per_body).min(count) {
                if id > first {
                    body.push(',');
                }
                body.push_str(&format!(r#"{{"id":{id},"user":"u{id}","ok":true}}"#));
            }
            body.push(']');
            Bytes::from(body)
        })
        .collect()
}

/// JSON read throughput: a catch-up read of `count` small messages decoded
/// into a struct, through `read().json::<T>()`, vs raw GETs decoded with
/// `serde_json::from_slice::<Vec<T>>`.
pub async fn json_read(t: &Target, count: usize) -> Result<Vec<Row>, String> {
    let client = client()?;
    let raw = raw::client();
    let s = fresh(t, &client, JSON).await?;
    for body in json_bodies(count) {
        raw::send_ok(
            &raw,
            Method::POST,
            s.url().as_str(),
            &[("content-type", JSON)],
            body,
        )
        .await?;
    }
    let mut bytes = 0usize;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    // In turns, like the latency rows: the Node server's garbage from one
    // 34 MB answer is collected during the next, whoever asks for it.
    interleaved(
        t.rounds,
        async || {
            let start = Instant::now();
            let mut n = 0;
            let mut batches = s.read().offset(Offset::start()).json::<Msg>();
            while let Some(batch) = batches.next().await {
                n += batch.map_err(api("json read"))?.items.len();
            }
            if n != count {
                return Err(format!("json read {n} messages, expected {count}"));
            }
            Ok(count as f64 / start.elapsed().as_secs_f64())
        },
        async || {
            let start = Instant::now();
            let mut n = 0;
            bytes = 0;
            raw::read_all(&raw, s.url().as_str(), |b| {
                bytes += b.len();
                let items: Vec<Msg> =
                    serde_json::from_slice(b).map_err(|e| format!("baseline decode: {e}"))?;
                n += items.len();
                Ok(())
            })
            .await?;
            if n != count {
                return Err(format!("baseline json read {n} messages, expected {count}"));
            }
            Ok(count as f64 / start.elapsed().as_secs_f64())
        },
        (&mut ours, &mut base),
    )
    .await?;
    let mut row = Row::new(
        &t.label,
        "json-read",
        Metric::Throughput,
        "msg/s",
        ours,
        base,
    )
    .ok_or("no rounds")?;
    let per_msg = bytes as f64 / count as f64;
    row.ours_mb_per_s = Some(row.ours.p50 * per_msg / 1e6);
    row.baseline_mb_per_s = Some(row.baseline.p50 * per_msg / 1e6);
    row.params = format!(
        "{} rounds of a catch-up read of {count} JSON messages (~{per_msg:.0} B) decoded into a struct",
        t.rounds
    );
    Ok(vec![row])
}
