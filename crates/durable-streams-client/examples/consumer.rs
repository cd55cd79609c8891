//! A long-running consumer: handles a JSON stream batch by batch, checkpoints
//! to a directory, survives a restart without re-handling committed batches,
//! and stops when the stream is closed.
//!
//! Run against a server: `cargo run --example consumer -- http://127.0.0.1:4437`
//! (the URL may also come from `DS_URL`; `scripts/demo.sh` shows how to start
//! a local server).

use std::time::Duration;

use durable_streams_client::consumer::{
    Batch, Consumer, ErrorAction, FileCheckpointStore, Flow, Handler, Json, StartFrom, StopReason,
};
use durable_streams_client::{Client, CreateOptions, Error, LiveMode, Offset, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Event {
    n: u32,
    text: String,
}

/// Prints events; asks to stop after `stop_after` events (to show a restart).
struct Printer {
    run: &'static str,
    handled: u32,
    stop_after: Option<u32>,
}

impl Handler for Printer {
    type Format = Json<Event>;

    async fn handle_batch(&mut self, batch: &Batch<Event>) -> Result<Flow> {
        for event in &batch.items {
            println!("[{}] event #{}: {}", self.run, event.n, event.text);
            self.handled += 1;
        }
        println!("[{}] commit offset {}", self.run, batch.offset);
        Ok(match self.stop_after {
            Some(limit) if self.handled >= limit => Flow::Stop,
            _ => Flow::Continue,
        })
    }

    async fn handle_error(&mut self, error: &Error) -> ErrorAction {
        eprintln!("[{}] error: {error}", self.run);
        ErrorAction::default_for(error)
    }

    async fn on_up_to_date(&mut self, offset: &Offset) {
        println!("[{}] caught up at {offset}", self.run);
    }

    async fn on_closed(&mut self, offset: &Offset) {
        println!("[{}] stream closed at {offset}", self.run);
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let base = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DS_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:4437".to_owned());
    let client = Client::new();
    let name = format!("consumer-example-{}", std::process::id());
    let stream = client.stream(format!("{base}/v1/stream/{name}"))?;
    stream.create_with(CreateOptions::json()).await?;
    stream
        .append_json_batch((0..5).map(|n| Event {
            n,
            text: format!("history #{n}"),
        }))
        .await?;

    let checkpoints_dir = std::env::temp_dir().join(&name);
    let checkpoints = FileCheckpointStore::new(&checkpoints_dir);
    let consumer = |run, stop_after| {
        Consumer::builder(
            &stream,
            Printer {
                run,
                handled: 0,
                stop_after,
            },
        )
        .name("printer")
        .start_from(StartFrom::Checkpoint)
        .live(LiveMode::Auto)
        .checkpoint_store(checkpoints.clone())
        .build()
    };

    // First run: handles the history, then its handler asks to stop.
    let reason = consumer("run 1", Some(5))?.spawn().join().await?;
    println!("run 1 stopped: {reason:?}");

    // More events arrive while no consumer runs, then live ones, then closure.
    let writer = stream.clone();
    let writer_task = tokio::spawn(async move {
        for n in 5..10 {
            writer
                .append_json(&Event {
                    n,
                    text: format!("live #{n}"),
                })
                .await?;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        writer.close().await
    });

    // Second run resumes from the checkpoint: events 0..5 are not handled again.
    let handle = consumer("run 2", None)?.spawn();
    let reason = handle.join().await?;
    assert_eq!(reason, StopReason::Closed);
    println!("run 2 stopped: {reason:?}");
    writer_task.await.expect("writer task")?;

    println!(
        "checkpoint file {} holds {}",
        checkpoints_dir.join("printer").display(),
        std::fs::read_to_string(checkpoints_dir.join("printer"))
            .unwrap_or_default()
            .trim()
    );
    let _ = std::fs::remove_dir_all(&checkpoints_dir);
    stream.delete().await?;
    Ok(())
}
