//! Webhook subscriptions against the Node reference server started with
//! webhooks enabled: real deliveries to a receiver on 127.0.0.1, verified
//! with the key set fetched from the server, completed synchronously
//! (`{"done": true}`) or through the callback, retried after a failure, and
//! forged or replayed variants of a real delivery rejected.

mod common;

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use durable_streams_client::subscription::{
    PendingStream, SIGNATURE_HEADER, StreamAck, SubscriptionSpec, SubscriptionStatus,
    SubscriptionType, Subscriptions, Wake, WebhookResponse, WebhookVerifier,
};
use durable_streams_client::{
    CreateOptions, ErrorKind, Offset, Result, SubscriptionErrorCode, WebhookRejection,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use test_servers::{ServerKind, ServerOptions, TestServer};
use tokio::sync::{mpsc, oneshot};

/// How long to wait for the server to deliver (its first retry comes after
/// about one second).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

fn server() -> TestServer {
    TestServer::start_with(
        ServerKind::Node,
        ServerOptions {
            webhooks: true,
            ..Default::default()
        },
    )
}

fn subs(server: &TestServer) -> Subscriptions {
    common::client()
        .subscriptions(server.base_url())
        .expect("subscriptions")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Event {
    n: u64,
}

/// One delivery, held open until the test answers it.
struct Delivery {
    headers: HeaderMap,
    body: Bytes,
    reply: oneshot::Sender<(StatusCode, Vec<u8>)>,
}

impl Delivery {
    fn signature(&self) -> String {
        self.headers[SIGNATURE_HEADER].to_str().unwrap().to_owned()
    }

    fn answer(self, status: StatusCode, body: &[u8]) {
        let _ = self.reply.send((status, body.to_vec()));
    }

    fn respond(self, response: WebhookResponse) {
        let status = StatusCode::from_u16(response.status()).unwrap();
        self.answer(status, response.body());
    }
}

/// A webhook receiver on 127.0.0.1 (axum) that hands each delivery to the
/// test and answers what the test says.
struct Receiver {
    url: String,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let (tx, deliveries) = mpsc::unbounded_channel::<Delivery>();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let (reply, answer) = oneshot::channel();
                    if tx
                        .send(Delivery {
                            headers,
                            body,
                            reply,
                        })
                        .is_err()
                    {
                        return StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    match answer.await {
                        Ok((status, body)) => {
                            (status, [(header::CONTENT_TYPE, "application/json")], body)
                                .into_response()
                        }
                        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver");
        });
        Receiver {
            url,
            deliveries,
            task,
        }
    }

    async fn next(&mut self) -> Delivery {
        tokio::time::timeout(DELIVERY_TIMEOUT, self.deliveries.recv())
            .await
            .expect("no webhook delivery in time")
            .expect("receiver stopped")
    }

    async fn nothing_within(&mut self, wait: Duration) {
        if let Ok(Some(d)) = tokio::time::timeout(wait, self.deliveries.recv()).await {
            panic!("unexpected delivery: {}", String::from_utf8_lossy(&d.body));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A JSON stream with `count` events, and a webhook subscription `id` on
/// it (created after the stream, so linked at its tail: only later appends
/// are pending).
async fn setup(subs: &Subscriptions, receiver: &Receiver, id: &str, path: &str) {
    subs.stream(path)
        .unwrap()
        .create_with(CreateOptions::json())
        .await
        .unwrap();
    let confirmed = subs
        .create(
            id,
            &SubscriptionSpec::webhook(&receiver.url)
                .stream(path)
                .lease_ttl(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert!(confirmed.created);
    assert_eq!(confirmed.subscription.kind, SubscriptionType::Webhook);
}

async fn append(subs: &Subscriptions, path: &str, from: u64, count: u64) -> Offset {
    let events: Vec<_> = (from..from + count).map(|n| Event { n }).collect();
    subs.stream(path)
        .unwrap()
        .append_json_batch(&events)
        .await
        .unwrap()
        .next_offset
        .unwrap()
}

/// Read a pending stream from its acked offset up to the wake's tail, with
/// the library's reader: the events and the offset reached.
async fn read_pending(subs: &Subscriptions, p: &PendingStream) -> Result<(Vec<Event>, Offset)> {
    let mut batches = subs
        .stream(&p.path)?
        .read()
        .offset(p.acked_offset.clone())
        .json::<Event>();
    let mut events = Vec::new();
    let mut reached = p.acked_offset.clone();
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        events.extend(batch.items);
        if batch.exact {
            reached = batch.offset;
            if reached >= p.tail_offset {
                break;
            }
        }
    }
    Ok((events, reached))
}

async fn acked(subs: &Subscriptions, id: &str, path: &str) -> Offset {
    let sub = subs.get(id).await.unwrap();
    sub.streams
        .iter()
        .find(|l| l.path == path)
        .unwrap_or_else(|| panic!("{path} is not linked to {id}"))
        .acked_offset
        .clone()
}

/// Wait until the server reports `path` acked at `offset`.
async fn wait_acked(subs: &Subscriptions, id: &str, path: &str, offset: &Offset) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if acked(subs, id, path).await == *offset {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} was never acked at {offset}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn code(e: &durable_streams_client::Error) -> SubscriptionErrorCode {
    match e.kind() {
        ErrorKind::Subscription { code } => *code,
        other => panic!("expected a subscription error, got {other:?}: {e}"),
    }
}

fn rejection(result: Result<Wake>) -> WebhookRejection {
    match result {
        Err(e) => match e.kind() {
            ErrorKind::WebhookRejected { reason } => *reason,
            other => panic!("expected a rejection, got {other:?}: {e}"),
        },
        Ok(wake) => panic!("expected a rejection, got {wake:?}"),
    }
}

/// The one pending stream of a wake, checked against what was appended.
fn only_pending(wake: &Wake, path: &str, tail: &Offset) -> PendingStream {
    let pending: Vec<_> = wake.pending().cloned().collect();
    assert_eq!(pending.len(), 1, "{wake:?}");
    assert_eq!(pending[0].path, path);
    assert_eq!(pending[0].tail_offset, *tail);
    pending[0].clone()
}

/// (a) Finished inside the request: `{"done": true}` makes the server ack
/// the snapshot's tails; a callback for that wake afterwards is fenced.
#[tokio::test]
async fn synchronous_done_acks_the_snapshot() {
    let server = server();
    let subs = subs(&server);
    let mut receiver = Receiver::start().await;
    setup(&subs, &receiver, "sync", "orders/a").await;
    let verifier = WebhookVerifier::builder(&subs).subscription("sync").build();
    let before = acked(&subs, "sync", "orders/a").await;
    let tail = append(&subs, "orders/a", 0, 3).await;

    let delivery = receiver.next().await;
    let wake = verifier
        .verify(&delivery.headers, &delivery.body)
        .await
        .unwrap();
    assert_eq!(wake.subscription_id, "sync");
    assert!(
        wake.callback_url
            .as_deref()
            .unwrap()
            .ends_with("/v1/stream/__ds/subscriptions/sync/callback")
    );
    assert!(!format!("{wake:?}").contains(wake.token().expose_secret()));
    let p = only_pending(&wake, "orders/a", &tail);
    assert_eq!(p.acked_offset, before);
    let (events, reached) = read_pending(&subs, &p).await.unwrap();
    assert_eq!(events, (0..3).map(|n| Event { n }).collect::<Vec<_>>());
    assert_eq!(reached, tail);
    delivery.respond(WebhookResponse::done());

    wait_acked(&subs, "sync", "orders/a", &tail).await;
    // The server's signing metadata names the key that signed and the key
    // set the verifier fetched.
    let sub = subs.get("sync").await.unwrap();
    let signing = sub.webhook.unwrap().signing.unwrap();
    assert_eq!(signing.alg, "ed25519");
    assert!(
        signing.jwks_url.ends_with("/v1/stream/__ds/jwks.json"),
        "{}",
        signing.jwks_url
    );
    assert_eq!(verifier.key_ids(), [signing.kid]);
    // Stale: the wake was completed by the synchronous answer.
    let err = subs
        .ack(&wake, &[StreamAck::new("orders/a", tail.clone())], true)
        .await
        .unwrap_err();
    assert_eq!(code(&err), SubscriptionErrorCode::Fenced, "{err}");
    receiver.nothing_within(Duration::from_millis(500)).await;

    // The next append is a new wake with a higher generation, from the new cursor.
    let tail2 = append(&subs, "orders/a", 3, 2).await;
    let delivery = receiver.next().await;
    let next = verifier
        .verify(&delivery.headers, &delivery.body)
        .await
        .unwrap();
    assert!(next.generation > wake.generation);
    assert_ne!(next.wake_id, wake.wake_id);
    let p = only_pending(&next, "orders/a", &tail2);
    assert_eq!(p.acked_offset, tail);
    let (events, _) = read_pending(&subs, &p).await.unwrap();
    assert_eq!(events, vec![Event { n: 3 }, Event { n: 4 }]);
    delivery.respond(WebhookResponse::done());
    wait_acked(&subs, "sync", "orders/a", &tail2).await;
}

/// (b) Accepted at once, completed through the callback: a heartbeat, then
/// acks with `done`; (e) the same callback again is fenced.
#[tokio::test]
async fn callback_acks_after_an_accepted_delivery() {
    let server = server();
    let subs = subs(&server);
    let mut receiver = Receiver::start().await;
    setup(&subs, &receiver, "async", "orders/b").await;
    let verifier = WebhookVerifier::new(&subs);
    let tail = append(&subs, "orders/b", 0, 4).await;

    let delivery = receiver.next().await;
    let wake = verifier
        .verify(&delivery.headers, &delivery.body)
        .await
        .unwrap();
    delivery.respond(WebhookResponse::accepted());

    let p = only_pending(&wake, "orders/b", &tail);
    let (events, reached) = read_pending(&subs, &p).await.unwrap();
    assert_eq!(events.len(), 4);
    // A heartbeat extends the lease and commits nothing.
    let beat = subs.ack(&wake, &[], false).await.unwrap();
    assert!(!beat.next_wake);
    assert_ne!(acked(&subs, "async", "orders/b").await, tail);
    let out = subs
        .ack(&wake, &[StreamAck::new(&p.path, reached.clone())], true)
        .await
        .unwrap();
    assert!(!out.next_wake);
    assert_eq!(acked(&subs, "async", "orders/b").await, tail);

    // (e) A stale callback after done: fenced, nothing changes.
    for done in [true, false] {
        let err = subs
            .ack(&wake, &[StreamAck::new(&p.path, reached.clone())], done)
            .await
            .unwrap_err();
        assert_eq!(code(&err), SubscriptionErrorCode::Fenced, "{err}");
        assert!(!err.to_string().contains(wake.token().expose_secret()));
    }
    assert_eq!(acked(&subs, "async", "orders/b").await, tail);
    receiver.nothing_within(Duration::from_millis(500)).await;
}

/// (c) A receiver that fails once (500) gets the same wake again after the
/// server's backoff, and the work completes.
#[tokio::test]
async fn a_failed_delivery_is_retried() {
    let server = server();
    let subs = subs(&server);
    let mut receiver = Receiver::start().await;
    setup(&subs, &receiver, "retry", "orders/c").await;
    let verifier = WebhookVerifier::new(&subs);
    let tail = append(&subs, "orders/c", 0, 2).await;

    let first = receiver.next().await;
    let failed_wake = verifier.verify(&first.headers, &first.body).await.unwrap();
    first.answer(StatusCode::INTERNAL_SERVER_ERROR, b"{}");
    let failed_at = tokio::time::Instant::now();
    // While the retry is scheduled, the subscription reports `failed`.
    let deadline = failed_at + Duration::from_secs(5);
    while subs.get("retry").await.unwrap().status != SubscriptionStatus::Failed {
        assert!(tokio::time::Instant::now() < deadline, "never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let second = receiver.next().await;
    assert!(
        failed_at.elapsed() >= Duration::from_millis(700),
        "retried after {:?}, before the backoff",
        failed_at.elapsed()
    );
    let wake = verifier
        .verify(&second.headers, &second.body)
        .await
        .unwrap();
    assert_eq!(wake.wake_id, failed_wake.wake_id, "the same wake, retried");
    assert_eq!(wake.generation, failed_wake.generation);
    let p = only_pending(&wake, "orders/c", &tail);
    let (events, _) = read_pending(&subs, &p).await.unwrap();
    assert_eq!(events, vec![Event { n: 0 }, Event { n: 1 }]);
    second.respond(WebhookResponse::done());
    wait_acked(&subs, "retry", "orders/c", &tail).await;
    assert_eq!(
        subs.get("retry").await.unwrap().status,
        SubscriptionStatus::Active
    );
    receiver.nothing_within(Duration::from_millis(1500)).await;
}

/// (d) Variants of a real delivery: an altered body, an unknown key id
/// (a fresh verifier fetches the key set and still does not find it), an
/// old or future timestamp, no header, another subscription: all rejected
/// with their reason; the real one passes.
#[tokio::test]
async fn forged_and_replayed_deliveries_are_rejected() {
    let server = server();
    let subs = subs(&server);
    let mut receiver = Receiver::start().await;
    setup(&subs, &receiver, "forge", "orders/d").await;
    let verifier = WebhookVerifier::new(&subs);
    let tail = append(&subs, "orders/d", 0, 1).await;

    let delivery = receiver.next().await;
    let signature = delivery.signature();
    let body = delivery.body.clone();
    let params: Vec<(&str, &str)> = signature
        .split(',')
        .map(|p| p.split_once('=').unwrap())
        .collect();
    let names: Vec<_> = params.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["t", "kid", "ed25519"]);
    let (t, kid, sig) = (params[0].1, params[1].1, params[2].1);
    let t: u64 = t.parse().unwrap();
    let with = |t: u64, kid: &str, sig: &str| format!("t={t},kid={kid},ed25519={sig}");

    // Altered body: the generation bumped.
    let text = String::from_utf8(body.to_vec()).unwrap();
    let generation = serde_json::from_str::<serde_json::Value>(&text).unwrap()["generation"]
        .as_u64()
        .unwrap();
    let tampered = text.replace(
        &format!("\"generation\":{generation}"),
        &format!("\"generation\":{}", generation + 1),
    );
    assert_ne!(tampered, text);
    assert_eq!(
        rejection(
            verifier
                .verify(&delivery.headers, tampered.as_bytes())
                .await
        ),
        WebhookRejection::BadSignature
    );
    // An unknown key id: a fresh verifier fetches the server's key set for it.
    let fresh = WebhookVerifier::new(&subs);
    assert_eq!(
        rejection(
            fresh
                .verify_signature(Some(&with(t, "ds_unknown", sig)), &body)
                .await
        ),
        WebhookRejection::UnknownKey
    );
    assert_eq!(fresh.key_ids(), [kid.to_owned()], "the key set was fetched");
    // Old and future timestamps (the window is checked before the signature).
    for moved in [t - 600, t + 600] {
        assert_eq!(
            rejection(
                verifier
                    .verify_signature(Some(&with(moved, kid, sig)), &body)
                    .await
            ),
            WebhookRejection::OutsideReplayWindow
        );
    }
    // Inside the window but not what was signed.
    assert_eq!(
        rejection(
            verifier
                .verify_signature(Some(&with(t - 1, kid, sig)), &body)
                .await
        ),
        WebhookRejection::BadSignature
    );
    assert_eq!(
        rejection(verifier.verify_signature(None, &body).await),
        WebhookRejection::MissingSignature
    );
    assert_eq!(
        rejection(
            verifier
                .verify_signature(Some(&with(t, kid, &sig[1..])), &body)
                .await
        ),
        WebhookRejection::MalformedSignature
    );
    let elsewhere = WebhookVerifier::builder(&subs)
        .subscription("another")
        .build();
    assert_eq!(
        rejection(elsewhere.verify(&delivery.headers, &body).await),
        WebhookRejection::UnexpectedSubscription
    );

    // The real delivery passes, and completes.
    let wake = verifier.verify(&delivery.headers, &body).await.unwrap();
    only_pending(&wake, "orders/d", &tail);
    delivery.respond(WebhookResponse::done());
    wait_acked(&subs, "forge", "orders/d", &tail).await;
}
