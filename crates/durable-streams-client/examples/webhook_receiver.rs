//! A webhook receiver (axum): verifies each signed wake notification, reads
//! the pending range of every stream with the library's reader, and
//! completes the wake, synchronously (`{"done": true}`) or, with
//! `--callback`, through the callback after answering `{}`.
//!
//! Run it against the Node reference server started with webhooks enabled
//! (`scripts/install-servers.sh` installs it once):
//!
//! ```text
//! node scripts/node-server.mjs --port 4437 --webhooks      # terminal 1
//! cargo run --example webhook_receiver -- http://127.0.0.1:4437 [--callback]
//! ```
//!
//! The receiver listens on `127.0.0.1:8787` (`DS_WEBHOOK_ADDR` to change;
//! the server accepts plain-http webhook URLs only on localhost/127.0.0.x),
//! creates the JSON stream `webhook-example/events` and the webhook
//! subscription `webhook-example` on it, appends a few events, and prints
//! what each delivery brings until Ctrl-C. Append more with
//! `cargo run -p dstream -- append http://127.0.0.1:4437/v1/stream/webhook-example/events '{"n": 9}'`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use durable_streams_client::subscription::{
    PendingStream, StreamAck, SubscriptionSpec, Subscriptions, Wake, WebhookResponse,
    WebhookVerifier,
};
use durable_streams_client::{Client, CreateOptions, ErrorKind, Result, SubscriptionErrorCode};
use futures::StreamExt;

const SUBSCRIPTION: &str = "webhook-example";
const STREAM: &str = "webhook-example/events";

struct App {
    subs: Subscriptions,
    verifier: WebhookVerifier,
    /// Complete through the callback instead of answering `{"done": true}`.
    callback: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let callback = args.iter().any(|a| a == "--callback");
    let base = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .or_else(|| std::env::var("DS_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:4437".to_owned());
    let addr = std::env::var("DS_WEBHOOK_ADDR").unwrap_or_else(|_| "127.0.0.1:8787".to_owned());

    let subs = Client::new().subscriptions(&base)?;
    // Only deliveries for our subscription are accepted (PROTOCOL.md 12.10).
    let verifier = WebhookVerifier::builder(&subs)
        .subscription(SUBSCRIPTION)
        .build();
    // Fail early if the server publishes no signing keys.
    verifier.refresh_keys().await?;

    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| durable_streams_client::Error::handler(format!("bind {addr}: {e}")))?;
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let app = Arc::new(App {
        subs: subs.clone(),
        verifier,
        callback,
    });
    let router = Router::new().route("/hook", post(receive)).with_state(app);
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    });

    // The stream, the subscription pointing at this receiver, and some events.
    subs.stream(STREAM)?
        .create_with(CreateOptions::json())
        .await?;
    let confirmed = subs
        .create(
            SUBSCRIPTION,
            &SubscriptionSpec::webhook(&url).stream(STREAM),
        )
        .await?;
    println!(
        "subscription {SUBSCRIPTION} {} -> {url} ({} mode); Ctrl-C to stop",
        if confirmed.created {
            "created"
        } else {
            "re-confirmed"
        },
        if callback { "callback" } else { "synchronous" }
    );
    let events: Vec<_> = (0..3).map(|n| serde_json::json!({ "n": n })).collect();
    subs.stream(STREAM)?.append_json_batch(&events).await?;

    match server.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(durable_streams_client::Error::handler(e)),
        Err(e) => Err(durable_streams_client::Error::handler(e)),
    }
}

/// One delivery: verify, then work and answer.
async fn receive(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    // Verify the raw bytes, before anything else looks at them.
    let wake = match app.verifier.verify(&headers, &body).await {
        Ok(wake) => wake,
        Err(e) if matches!(e.kind(), ErrorKind::WebhookRejected { .. }) => {
            eprintln!("rejected a delivery: {e}");
            return StatusCode::UNAUTHORIZED.into_response();
        }
        // The keys could not be fetched: let the server retry later.
        Err(e) => {
            eprintln!("could not verify a delivery: {e}");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    println!(
        "wake {} (generation {}) for {}",
        wake.wake_id, wake.generation, wake.subscription_id
    );
    if app.callback {
        // Answer at once; finish in the background with the callback.
        let subs = app.subs.clone();
        tokio::spawn(async move { complete_with_callback(&subs, &wake).await });
        return answer(WebhookResponse::accepted());
    }
    // Synchronous: the work happens inside the request, then `{"done": true}`
    // makes the server ack each stream up to the wake's tail offset.
    match process(&app.subs, &wake).await {
        Ok(_) => answer(WebhookResponse::done()),
        Err(e) => {
            // Not done: an error status makes the server deliver again.
            eprintln!("processing failed: {e}");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

fn answer(response: WebhookResponse) -> Response {
    let status = StatusCode::from_u16(response.status()).expect("status");
    (
        status,
        [(header::CONTENT_TYPE, response.content_type())],
        response.body(),
    )
        .into_response()
}

async fn complete_with_callback(subs: &Subscriptions, wake: &Wake) {
    let acks = match process(subs, wake).await {
        Ok(acks) => acks,
        Err(e) => {
            // Without a `done`, the lease lapses and the server wakes again.
            eprintln!("processing failed; the wake will lapse: {e}");
            return;
        }
    };
    match subs.ack(wake, &acks, true).await {
        Ok(outcome) => println!(
            "wake {} acked{}",
            wake.wake_id,
            if outcome.next_wake {
                "; more work is waiting"
            } else {
                ""
            }
        ),
        // Another delivery of the subscription took over (our lease lapsed,
        // or the wake was completed already): nothing was committed, and
        // the current wake starts from the last acked offsets.
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::Subscription {
                    code: SubscriptionErrorCode::Fenced
                }
            ) =>
        {
            eprintln!("wake {} was fenced; dropping it", wake.wake_id)
        }
        Err(e) => eprintln!("ack failed; the wake will lapse: {e}"),
    }
}

/// Read every pending stream from its acked offset up to the wake's tail;
/// the acks to send for a callback.
async fn process(subs: &Subscriptions, wake: &Wake) -> Result<Vec<StreamAck>> {
    let mut acks = Vec::new();
    for pending in wake.pending() {
        let reached = read_range(subs, pending).await?;
        acks.push(StreamAck::new(&pending.path, reached));
    }
    Ok(acks)
}

async fn read_range(
    subs: &Subscriptions,
    p: &PendingStream,
) -> Result<durable_streams_client::Offset> {
    let mut batches = subs
        .stream(&p.path)?
        .read()
        .offset(p.acked_offset.clone())
        .json::<serde_json::Value>();
    let mut reached = p.acked_offset.clone();
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        for event in &batch.items {
            println!("  {}: {event}", p.path);
        }
        if batch.exact {
            reached = batch.offset;
            if reached >= p.tail_offset {
                break;
            }
        }
    }
    Ok(reached)
}
