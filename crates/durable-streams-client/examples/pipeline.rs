//! A pipeline: 4 processors partitioned by user (each user's events in
//! order), two batchers, failures written to a dead-letter stream, and a
//! file checkpoint that only advances past fully handled offsets.
//!
//! Run against a server: `cargo run --example pipeline -- http://127.0.0.1:4437`
//! (the URL may also come from `DS_URL`; `scripts/demo.sh` shows how to start
//! a local server).

use std::time::Duration;

use durable_streams_client::consumer::{FileCheckpointStore, StartFrom};
use durable_streams_client::pipeline::{BatchInfo, DeadLetter, Message, Pipeline, Processed};
use durable_streams_client::{Client, CreateOptions, Error, LiveMode, Result};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Event {
    user: String,
    kind: String,
    amount: u32,
}

#[tokio::main]
async fn main() -> Result<()> {
    let base = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DS_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:4437".to_owned());
    let client = Client::new();
    let name = format!("pipeline-example-{}", std::process::id());
    let events = client.stream(format!("{base}/v1/stream/{name}"))?;
    events.create_with(CreateOptions::json()).await?;
    let dead_letters = client.stream(format!("{base}/v1/stream/{name}-dlq"))?;
    dead_letters.create_with(CreateOptions::json()).await?;

    let users = ["ada", "bob", "cy"];
    let kinds = ["purchase", "pageview", "pageview", "refund"];
    events
        .append_json_batch((0..40u32).map(|i| Event {
            user: users[i as usize % 3].to_owned(),
            kind: kinds[i as usize % 4].to_owned(),
            amount: i,
        }))
        .await?;

    let checkpoints_dir = std::env::temp_dir().join(&name);
    let handle = Pipeline::json::<Event>(&events)
        .name("billing")
        .start_from(StartFrom::Checkpoint)
        .live(LiveMode::Auto)
        .checkpoint_store(FileCheckpointStore::new(&checkpoints_dir))
        .processors(4)
        .partition_by(|m: &Message<Event>| m.data.user.clone())
        .process(|m: Message<Event>| async move {
            match m.data.kind.as_str() {
                "purchase" => Ok(Processed::batch("database", m)),
                "pageview" => Ok(Processed::batch("analytics", m)),
                other => Err(Error::handler(format!("unsupported event kind `{other}`"))),
            }
        })
        .batcher(
            "database",
            5,
            Duration::from_millis(200),
            |info: BatchInfo, batch: Vec<Message<Event>>| async move {
                let total: u32 = batch.iter().map(|m| m.data.amount).sum();
                println!(
                    "[database] insert {} purchases ({:?}), total {total}",
                    info.size, info.trigger
                );
                Ok(())
            },
        )
        .batcher(
            "analytics",
            10,
            Duration::from_millis(500),
            |info: BatchInfo, _batch: Vec<Message<Event>>| async move {
                println!(
                    "[analytics] track {} pageviews ({:?})",
                    info.size, info.trigger
                );
                Ok(())
            },
        )
        .on_failure(|failure| {
            eprintln!(
                "[failure] {} at {} #{}: {}",
                failure.stage.as_str(),
                failure.position.offset,
                failure.position.index,
                failure.error
            )
        })
        .dead_letter_stream(&dead_letters)
        .build()?
        .spawn();

    // Live events while the pipeline runs.
    for i in 40..50u32 {
        events
            .append_json(&Event {
                user: users[i as usize % 3].to_owned(),
                kind: kinds[i as usize % 4].to_owned(),
                amount: i,
            })
            .await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tail = events.head().await?.next_offset;
    let mut committed = handle.subscribe();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        committed.wait_for(|o| o.as_ref() == Some(&tail)),
    )
    .await;

    // Drain: in-flight messages finish, batchers flush, the checkpoint is saved.
    let reason = handle.shutdown().await?;
    println!("pipeline stopped: {reason:?}");
    println!(
        "checkpoint: {}",
        std::fs::read_to_string(checkpoints_dir.join("billing")).unwrap_or_default()
    );

    let mut read = dead_letters.read().json::<DeadLetter>();
    while let Some(batch) = read.next().await {
        for letter in batch?.items {
            println!(
                "[dead letter] offset {} #{} ({}): {} -> {}",
                letter.offset, letter.index, letter.stage, letter.error, letter.payload
            );
        }
    }

    let _ = std::fs::remove_dir_all(&checkpoints_dir);
    events.delete().await?;
    dead_letters.delete().await?;
    Ok(())
}
