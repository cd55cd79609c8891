//! A supervisor running a consumer whose handler panics now and then, a
//! pipeline, and a heartbeat task: failed children are restarted with
//! backoff; ctrl-c (or the end of the demo) shuts everything down gracefully.
//!
//! Run against a server: `cargo run --example supervisor -- http://127.0.0.1:4437`
//! (the URL may also come from `DS_URL`). Press ctrl-c to stop early.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use durable_streams_client::consumer::{
    Batch, Consumer, Flow, Handler, Json, MemoryCheckpointStore,
};
use durable_streams_client::pipeline::{Message, Pipeline, Processed};
use durable_streams_client::supervisor::{ChildSpec, Restart, Supervisor};
use durable_streams_client::{Client, CreateOptions, LiveMode, Result};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize, Deserialize)]
struct Tick {
    n: u32,
}

/// Panics on every 7th message the first time it sees it.
struct Flaky {
    panics: Arc<AtomicU32>,
}

impl Handler for Flaky {
    type Format = Json<Tick>;

    async fn handle_batch(&mut self, batch: &Batch<Tick>) -> Result<Flow> {
        for tick in &batch.items {
            if tick.n % 7 == 6 && self.panics.load(Ordering::SeqCst) <= tick.n / 7 {
                self.panics.fetch_add(1, Ordering::SeqCst);
                panic!("flaky handler trips on tick {}", tick.n);
            }
            println!("[consumer] tick {}", tick.n);
        }
        Ok(Flow::Continue)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let base = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DS_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:4437".to_owned());
    let client = Client::new();
    let name = format!("supervisor-example-{}", std::process::id());
    let stream = client.stream(format!("{base}/v1/stream/{name}"))?;
    stream.create_with(CreateOptions::json()).await?;

    let checkpoints = MemoryCheckpointStore::new();
    let panics = Arc::new(AtomicU32::new(0));
    let (s, store, p) = (stream.clone(), checkpoints.clone(), Arc::clone(&panics));
    let consumer = ChildSpec::consumer("flaky-consumer", move || {
        Consumer::builder(
            &s,
            Flaky {
                panics: Arc::clone(&p),
            },
        )
        .name("flaky")
        .live(LiveMode::LongPoll)
        .checkpoint_store(store.clone())
        .build()
    });
    let (s, store) = (stream.clone(), checkpoints.clone());
    let pipeline = ChildSpec::pipeline("sum-pipeline", move || {
        Pipeline::json::<Tick>(&s)
            .name("sum")
            .live(LiveMode::LongPoll)
            .checkpoint_store(store.clone())
            .processors(2)
            .process(|m: Message<Tick>| async move { Ok(Processed::batch("sum", m)) })
            .batcher(
                "sum",
                5,
                Duration::from_millis(300),
                |_info, batch: Vec<Message<Tick>>| async move {
                    let sum: u32 = batch.iter().map(|m| m.data.n).sum();
                    println!("[pipeline] batch of {} ticks, sum {sum}", batch.len());
                    Ok(())
                },
            )
            .build()
    });
    let writer_stream = stream.clone();
    let writer = ChildSpec::new("writer", move |token: CancellationToken| {
        let stream = writer_stream.clone();
        async move {
            for n in 0..30u32 {
                if token.is_cancelled() {
                    break;
                }
                stream.append_json(&Tick { n }).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(())
        }
    })
    .restart(Restart::Transient);

    let shutdown = CancellationToken::new();
    let supervisor = Supervisor::builder()
        .child(consumer)
        .child(pipeline)
        .child(writer)
        .intensity(10, Duration::from_secs(10))
        .shutdown_timeout(Duration::from_secs(5))
        .stop_on_ctrl_c(true)
        .build()?;
    let stopper = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        println!("demo over: shutting down");
        stopper.cancel();
    });
    supervisor.run(shutdown).await?;
    println!(
        "stopped; consumer panicked {} times and was restarted each time; checkpoints: consumer {:?}, pipeline {:?}",
        panics.load(Ordering::SeqCst),
        checkpoints.get("flaky").map(|o| o.to_string()),
        checkpoints.get("sum").map(|o| o.to_string()),
    );
    stream.delete().await?;
    Ok(())
}
