//! Framed Protobuf and zstd-compressed throughput (write through the
//! producer, read back with `ReadBuilder`) next to plain bytes of the same
//! payloads, against the Rust server, measured in the same run.
//!
//! ```text
//! cargo bench -p durable-streams-client --features protobuf,frame-zstd --bench codec
//! DS_BENCH_QUICK=1 cargo bench ... --bench codec   # 1/10 of the work
//! ```
//!
//! Payloads: `COUNT` Protobuf messages of about 1.5 KiB (a sequence number
//! and a repetitive, compressible text). "bytes" sends each message's
//! encoding as one producer message and reads raw chunks (no framing: the
//! ceiling); "prost" frames them plain; "prost+zstd" compresses each frame
//! (level 3). Stored bytes show what the server keeps. Each scenario runs
//! `ROUNDS` times, alternating; medians are shown with the ratio to "bytes".

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use durable_streams_client::codec::{Compression, Framed, Framing, ProstCodec};
use durable_streams_client::{Client, LiveMode, Producer, Stream};
use futures::StreamExt;

const ROUNDS: usize = 5;

#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(string, tag = "2")]
    body: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Bytes,
    Prost,
    ProstZstd,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bytes => "bytes",
            Kind::Prost => "prost",
            Kind::ProstZstd => "prost+zstd",
        }
    }

    fn framed(self) -> Framed<ProstCodec<Event>> {
        let compression = match self {
            Kind::ProstZstd => Compression::zstd(),
            _ => Compression::None,
        };
        Framed::new(ProstCodec::new()).framing(Framing::new().compression(compression))
    }
}

struct Sample {
    write: Duration,
    read: Duration,
    stored: usize,
}

fn events(count: usize) -> Vec<Event> {
    (0..count as u64)
        .map(|seq| Event {
            seq,
            body: format!("sensor-{} reading {} ok; ", seq % 7, seq % 100).repeat(64),
        })
        .collect()
}

async fn run(base: &str, client: &Client, kind: Kind, events: &[Event], round: usize) -> Sample {
    let url = format!("{base}/v1/stream/codec-{}-{round}", kind.name());
    let stream: Stream = client
        .stream(&url)
        .expect("url")
        .with_content_type("application/octet-stream");
    stream.create().await.expect("create");
    let framed = kind.framed();
    let plain: Vec<Bytes> = events
        .iter()
        .map(|e| Bytes::from(prost::Message::encode_to_vec(e)))
        .collect();
    let producer = Producer::builder(&stream, "bench")
        .build()
        .expect("producer");
    let started = Instant::now();
    for (e, p) in events.iter().zip(&plain) {
        let ack = match kind {
            Kind::Bytes => producer.send(p.clone()).await,
            _ => producer.send_frame(&framed, e).await,
        };
        drop(ack.expect("send"));
    }
    producer.flush().await.expect("flush");
    let write = started.elapsed();
    producer.close().await.expect("close");

    let started = Instant::now();
    let mut stored = 0;
    let mut seen = 0;
    if kind == Kind::Bytes {
        let mut chunks = stream.read().live(LiveMode::Off).bytes();
        while let Some(c) = chunks.next().await {
            stored += c.expect("chunk").data.len();
        }
        seen = events.len();
    } else {
        let mut chunks = stream.read().live(LiveMode::Off).bytes();
        let mut decoder = framed
            .settings()
            .decoder(durable_streams_client::Offset::start());
        let mut out = Vec::new();
        while let Some(c) = chunks.next().await {
            let c = c.expect("chunk");
            stored += c.data.len();
            decoder.push(c.data, &mut out).expect("frames");
            for p in out.drain(..) {
                let e: Event = prost::Message::decode(p).expect("decode");
                std::hint::black_box(&e);
                seen += 1;
            }
        }
    }
    assert_eq!(seen, events.len());
    Sample {
        write,
        read: started.elapsed(),
        stored,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let quick = common::quick();
    let count = if quick { 2_000 } else { 20_000 };
    let Some((server, runtime)) = common::rust_server() else {
        return;
    };
    let events = events(count);
    let client = Client::new();
    let kinds = [Kind::Bytes, Kind::Prost, Kind::ProstZstd];
    let mut samples: Vec<Vec<Sample>> = kinds.iter().map(|_| Vec::new()).collect();
    runtime.block_on(async {
        for round in 0..ROUNDS {
            for (i, kind) in kinds.iter().enumerate() {
                let s = run(server.base_url(), &client, *kind, &events, round).await;
                samples[i].push(s);
            }
        }
    });
    let mb = |n: usize, d: f64| n as f64 / d / 1e6;
    let payload: usize = events.iter().map(prost::Message::encoded_len).sum();
    println!(
        "{count} Protobuf messages, {:.1} MiB encoded; medians of {ROUNDS} rounds (MB/s of encoded payload)",
        payload as f64 / (1 << 20) as f64
    );
    println!(
        "{:<12} {:>10} {:>8} {:>10} {:>8} {:>12} {:>8}",
        "scenario", "write MB/s", "ratio", "read MB/s", "ratio", "stored MiB", "ratio"
    );
    let stats: Vec<(f64, f64, f64)> = samples
        .iter()
        .map(|s| {
            (
                median(
                    s.iter()
                        .map(|x| mb(payload, x.write.as_secs_f64()))
                        .collect(),
                ),
                median(
                    s.iter()
                        .map(|x| mb(payload, x.read.as_secs_f64()))
                        .collect(),
                ),
                median(s.iter().map(|x| x.stored as f64).collect()),
            )
        })
        .collect();
    let (bw, br, bs) = stats[0];
    for (kind, (w, r, s)) in kinds.iter().zip(&stats) {
        println!(
            "{:<12} {:>10.1} {:>8.2} {:>10.1} {:>8.2} {:>12.2} {:>8.3}",
            kind.name(),
            w,
            w / bw,
            r,
            r / br,
            s / (1 << 20) as f64,
            s / bs
        );
    }
}
