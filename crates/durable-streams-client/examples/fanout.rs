//! Fan-out in one process: a thousand local subscribers of one stream on a
//! single shared SSE read (`ReadBuilder::shared`), each getting every typed
//! message once, in order, and one deliberately slow subscriber that falls
//! behind the shared ring and continues on its own connection without
//! losing or repeating anything.
//!
//! Run against a server: `cargo run --example fanout -- http://127.0.0.1:4437`
//! (the URL may also come from `DS_URL`; `scripts/demo.sh` shows how to start
//! a local server).

use std::time::Duration;

use durable_streams_client::{Client, CreateOptions, JsonStream, LiveMode, Result};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Price {
    seq: u32,
    cents: u64,
}

/// Every price a subscriber receives until the stream is closed.
async fn collect(mut prices: JsonStream<Price>, delay: Duration) -> Result<Vec<Price>> {
    let mut seen = Vec::new();
    while let Some(batch) = prices.next().await {
        seen.extend(batch?.items);
        tokio::time::sleep(delay).await;
    }
    Ok(seen)
}

#[tokio::main]
async fn main() -> Result<()> {
    let base = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DS_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:4437".to_owned());
    let client = Client::new();
    let name = format!("fanout-example-{}", std::process::id());
    let stream = client.stream(format!("{base}/v1/stream/{name}"))?;
    stream.create_with(CreateOptions::json()).await?;

    // One SSE connection for everyone; 16 batches kept for the slow.
    let shared = stream.read().live(LiveMode::Sse).shared(16)?;
    let fast: Vec<_> = (0..1000)
        .map(|_| tokio::spawn(collect(shared.subscribe_json(), Duration::ZERO)))
        .collect();
    let slow = tokio::spawn(collect(shared.subscribe_json(), Duration::from_millis(50)));

    let sent: Vec<Price> = (0..100)
        .map(|seq| Price {
            seq,
            cents: 10_000 + u64::from(seq) * 7,
        })
        .collect();
    for price in &sent {
        stream.append_json(price).await?;
    }
    stream.close().await?;

    for task in fast {
        assert_eq!(task.await.expect("subscriber")?, sent);
    }
    println!(
        "1000 subscribers got all {} prices over one connection",
        sent.len()
    );
    assert_eq!(slow.await.expect("slow subscriber")?, sent);
    println!("the slow subscriber fell behind, went on alone and got them all too");
    Ok(())
}
