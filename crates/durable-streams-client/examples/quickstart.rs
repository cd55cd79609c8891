//! Quick start: create a JSON stream, append, catch up, tail it live, close it.
//!
//! Run against a server: `cargo run --example quickstart -- http://127.0.0.1:4437`
//! (or `scripts/demo.sh`, which starts a local server for you).

use std::time::{Duration, Instant};

use durable_streams_client::{Client, CreateOptions, LiveMode};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Event {
    n: u32,
    text: String,
}

#[tokio::main]
async fn main() -> durable_streams_client::Result<()> {
    let base = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DS_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:4437".to_owned());
    let client = Client::new();
    let name = format!("quickstart-{}", std::process::id());
    let stream = client.stream(format!("{base}/v1/stream/{name}"))?;

    let created = stream.create_with(CreateOptions::json()).await?;
    println!("created {} (new: {})", stream.url(), created.created);

    for n in 0..3 {
        stream
            .append_json(&Event {
                n,
                text: format!("hello #{n}"),
            })
            .await?;
    }
    let history: Vec<Event> = stream.read_json().await?;
    println!("caught up: {} events: {history:?}", history.len());

    // Tail live over SSE while a writer appends, then closes the stream.
    let tail_from = stream.head().await?.next_offset;
    let writer = stream.clone();
    let writer_task = tokio::spawn(async move {
        for n in 3..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            writer
                .append_json(&Event {
                    n,
                    text: format!("live #{n}"),
                })
                .await?;
        }
        writer.close().await
    });

    let started = Instant::now();
    let mut live = stream
        .read()
        .offset(tail_from)
        .live(LiveMode::Auto)
        .json::<Event>();
    while let Some(batch) = live.next().await {
        let batch = batch?;
        for event in &batch.items {
            println!("live: {event:?} after {:?}", started.elapsed());
        }
        if batch.closed {
            println!(
                "stream closed at offset {}; the reader ends cleanly",
                batch.offset
            );
        }
    }
    writer_task.await.expect("writer task")?;

    let info = stream.head().await?;
    println!("final offset {}, closed: {}", info.next_offset, info.closed);
    stream.delete().await?;
    Ok(())
}
