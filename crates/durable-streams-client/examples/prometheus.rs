//! The library's metrics as a Prometheus scrape page: install a Prometheus
//! recorder for the `metrics` facade, run a producer and a consumer, and
//! print what a scrape of `/metrics` would return.
//!
//! Run against a server (the `metrics` feature is needed):
//! `cargo run --example prometheus --features metrics -- http://127.0.0.1:4437`
//! (the URL may also come from `DS_URL`; `scripts/demo.sh` shows how to start
//! a local server). In a service, serve `handle.render()` on `/metrics` with
//! your web framework, or enable the exporter's own `http-listener` feature.

use std::time::Duration;

use durable_streams_client::consumer::{Batch, Consumer, Flow, Handler, Json, StartFrom};
use durable_streams_client::{Client, CreateOptions, LiveMode, Producer, Result};
use metrics_exporter_prometheus::PrometheusBuilder;

struct Count(usize);

impl Handler for Count {
    type Format = Json<serde_json::Value>;

    async fn handle_batch(&mut self, batch: &Batch<serde_json::Value>) -> Result<Flow> {
        self.0 += batch.items.len();
        Ok(Flow::Continue)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("no other metrics recorder is installed");
    let base = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DS_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:4437".to_owned());
    let client = Client::new();
    let name = format!("metrics-demo-{}", std::process::id());
    let stream = client.stream_at(&base, &name)?;
    stream.create_with(CreateOptions::json()).await?;

    let producer = Producer::builder(&stream, "metrics-demo").connect().await?;
    for n in 0..1_000 {
        producer.append_json(&serde_json::json!({ "n": n }))?;
    }
    producer.close().await?;

    let consumer = Consumer::builder(&stream, Count(0))
        .name("metrics-demo")
        .start_from(StartFrom::Start)
        .live(LiveMode::Off)
        .build()?
        .spawn();
    consumer.join().await?;
    tokio::time::sleep(Duration::from_millis(50)).await;

    // What a Prometheus scrape of /metrics returns.
    println!("{}", handle.render());
    stream.delete().await?;
    Ok(())
}
