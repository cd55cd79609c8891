//! Server-side subscriptions: durable cursors over many streams that wake
//! workers, so consumption scales out across processes and machines
//! (PROTOCOL.md sections 6 and 7).
//!
//! * [`Subscriptions`]: the management API (create or re-confirm, read,
//!   delete, explicit membership) and the delivery calls underneath workers
//!   (claim, ack/heartbeat, release, webhook callback).
//! * [`Worker`]: a pull-wake worker. It tails the wake stream, races other
//!   workers to claim, reads each pending stream from its acked offset to
//!   the wake's tail, hands the batches to the same
//!   [`Handler`](crate::consumer::Handler) a consumer uses, heartbeats while
//!   the handler works, and acks with `done` when finished.
//! * [`WebhookVerifier`]: checks webhook deliveries and turns them into
//!   [`Wake`]s (see [Webhooks](#webhooks)).
//!
//! # Guarantees
//!
//! Delivery is **at least once, in order within each stream**. A batch is
//! acknowledged only after the handler returned `Ok` for it; if a worker
//! dies, is fenced or loses its lease, the next holder starts again from the
//! last acked offset, so the unacknowledged tail of the last wake may be
//! handled twice. One subscription is held by one worker at a time (the
//! server's lease and generation fencing), so two workers never process the
//! same subscription concurrently; a worker that was paused past its lease
//! notices before it acks and commits nothing.
//!
//! # Scaling out
//!
//! Throughput across machines comes from several subscriptions, each held by
//! one worker at a time: shard the streams (for example `orders-0 ..
//! orders-K`, each with its own pattern such as `orders/0/*`, or with an
//! explicit list) and run workers that serve the whole set of shard ids on
//! every machine. Each worker claims whichever shard has pending work, so K
//! shards keep up to K workers busy, and a shard whose worker died is taken
//! over by another after one lease.
//!
//! # Webhooks
//!
//! A webhook subscription ([`SubscriptionSpec::webhook`]) has the server
//! POST each wake, signed with Ed25519, to a URL. The receiver verifies
//! every delivery with a [`WebhookVerifier`] before doing any work: the
//! `Webhook-Signature` header over the raw body, a replay window on its
//! timestamp (five minutes by default), the key named by its `kid` from the
//! server's key set (`{root}/__ds/jwks.json`, fetched through this client
//! and cached; refetched at most once per interval when an unknown key
//! appears), and optionally the subscription id. Failures are errors of
//! kind [`ErrorKind::WebhookRejected`]
//! with a [`WebhookRejection`](crate::WebhookRejection) reason; the callback
//! token is never shown. The wake is then completed either by answering
//! [`WebhookResponse::done()`] (the server acks the snapshot's tail
//! offsets) or by answering [`WebhookResponse::accepted()`] and calling
//! [`Subscriptions::ack`] later; a wake completed already or superseded is
//! fenced ([`SubscriptionErrorCode::Fenced`]). A failed answer (non-2xx or
//! no answer) is delivered again with backoff, so the same wake can arrive
//! more than once. `examples/webhook_receiver.rs` is a complete receiver.
//!
//! Paths in subscription bodies are relative to the stream root
//! (`{base}/v1/stream` on the reference servers): `events/abc` is the stream
//! at `{base}/v1/stream/events/abc`.

mod lease;
mod types;
mod webhook;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use crate::client::Client;
use crate::error::{Error, ErrorKind, Result, SubscriptionErrorCode};
use crate::request::{BufferedResponse, Idempotency, RequestSpec, error_from_response, names};
use crate::stream::Stream;

pub use types::{
    AckOutcome, Claim, Confirmed, DEFAULT_LEASE_TTL, LinkType, MAX_LEASE_TTL, MIN_LEASE_TTL,
    PendingStream, SecretToken, StreamAck, StreamLink, Subscription, SubscriptionSpec,
    SubscriptionStatus, SubscriptionType, Wake, WebhookSigning, WebhookTarget,
};
pub use webhook::{
    DEFAULT_KEYS_MAX_AGE, DEFAULT_MIN_REFETCH_INTERVAL, DEFAULT_REPLAY_WINDOW, SIGNATURE_HEADER,
    WebhookResponse, WebhookVerifier, WebhookVerifierBuilder,
};
pub use worker::{Worker, WorkerBuilder, WorkerHandle, WorkerStats};

pub(crate) use types::{ClaimBody, WakeSource, check_path, normalize_path};

/// Whether the server was seen to implement the `__ds` routes.
const SUPPORT_UNKNOWN: u8 = 0;
const SUPPORTED: u8 = 1;

/// The subscription APIs of one server, under its stream root. Cheap to
/// clone; clones share the client's connections.
///
/// ```no_run
/// # async fn demo() -> durable_streams_client::Result<()> {
/// use durable_streams_client::Client;
/// use durable_streams_client::subscription::SubscriptionSpec;
/// let client = Client::new();
/// let subs = client.subscriptions("http://127.0.0.1:4437")?;
/// let confirmed = subs
///     .create("orders-0", &SubscriptionSpec::pull_wake("wake/orders").pattern("orders/0/*"))
///     .await?;
/// println!("created: {}", confirmed.created);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Subscriptions {
    root: Stream,
    support: Arc<AtomicU8>,
}

impl Client {
    /// The subscription APIs of the server at `base_url` (the reference
    /// servers' layout: the stream root is `{base_url}/v1/stream`; a base that
    /// already ends in `/v1/stream` is used as is). No I/O happens here.
    pub fn subscriptions(&self, base_url: &str) -> Result<Subscriptions> {
        let base = base_url.trim().trim_end_matches('/');
        let root = if base.ends_with("/v1/stream") {
            base.to_owned()
        } else {
            format!("{base}/v1/stream")
        };
        Ok(Subscriptions::new(self.stream(root)?))
    }
}

impl Subscriptions {
    /// The subscription APIs under `root`, a handle on the stream root (any
    /// layout). Its headers, parameters and credential hook are used for
    /// every management call and every stream read by workers.
    pub fn new(root: Stream) -> Self {
        Subscriptions {
            root,
            support: Arc::new(AtomicU8::new(SUPPORT_UNKNOWN)),
        }
    }

    /// The stream root URL.
    pub fn root(&self) -> &url::Url {
        self.root.url()
    }

    /// A handle on the stream at root-relative `path` (as named in
    /// subscription bodies), with the root's headers and credentials.
    pub fn stream(&self, path: &str) -> Result<Stream> {
        check_path("path", path)?;
        Ok(self.root.sibling(self.url(normalize_path(path).split('/'))))
    }

    /// Create subscription `id`, or re-confirm it when one with an identical
    /// configuration exists ([`Confirmed::created`] says which). A different
    /// configuration under the same id is an error of kind
    /// [`ErrorKind::Subscription`] with [`SubscriptionErrorCode::AlreadyExists`].
    /// The spec is validated first; a server without subscriptions gives
    /// [`ErrorKind::Unsupported`] and nothing is created.
    pub async fn create(&self, id: &str, spec: &SubscriptionSpec) -> Result<Confirmed> {
        check_id(id)?;
        spec.validate()?;
        self.ensure_supported(id).await?;
        let body = serde_json::to_vec(&spec.to_json()).map_err(json_encode_error)?;
        let spec_req = RequestSpec::new(Method::PUT, "subscription_create")
            .header(reqwest::header::CONTENT_TYPE, "application/json")?
            .body(Bytes::from(body));
        let (resp, stream) = self.call(&self.id_url(id, &[]), &spec_req).await?;
        let subscription = parse_json(&stream, &resp)?;
        Ok(Confirmed {
            subscription,
            created: resp.status == StatusCode::CREATED,
        })
    }

    /// Read subscription `id`: its streams with link types and acked
    /// offsets, status, and webhook signing metadata.
    pub async fn get(&self, id: &str) -> Result<Subscription> {
        check_id(id)?;
        let spec = RequestSpec::new(Method::GET, "subscription_get");
        let (resp, stream) = self.call(&self.id_url(id, &[]), &spec).await?;
        parse_json(&stream, &resp)
    }

    /// Delete (tombstone) subscription `id`. In-flight acks for it fail.
    pub async fn delete(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let spec = RequestSpec::new(Method::DELETE, "subscription_delete");
        self.call(&self.id_url(id, &[]), &spec).await?;
        Ok(())
    }

    /// Link streams explicitly (at their current tail). Idempotent.
    pub async fn add_streams<I, S>(&self, id: &str, paths: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        check_id(id)?;
        let mut streams = Vec::new();
        for path in paths {
            check_path("streams", path.as_ref())?;
            streams.push(normalize_path(path.as_ref()).to_owned());
        }
        if streams.is_empty() {
            return Err(Error::invalid_argument("streams", "no stream paths given"));
        }
        let body = serde_json::to_vec(&serde_json::json!({ "streams": streams }))
            .map_err(json_encode_error)?;
        let spec = RequestSpec::new(Method::POST, "subscription_add_streams")
            .header(reqwest::header::CONTENT_TYPE, "application/json")?
            .body(Bytes::from(body))
            .idempotency(Idempotency::Safe);
        self.call(&self.id_url(id, &["streams"]), &spec).await?;
        Ok(())
    }

    /// Remove the explicit link of `path` (a glob link that still matches
    /// stays). Idempotent. The path travels URL-encoded, slashes included.
    pub async fn remove_stream(&self, id: &str, path: &str) -> Result<()> {
        check_id(id)?;
        check_path("path", path)?;
        let mut url = self.id_url(id, &["streams"]);
        push_segments(&mut url, [normalize_path(path)]);
        let spec = RequestSpec::new(Method::DELETE, "subscription_remove_stream");
        self.call(&url, &spec).await?;
        Ok(())
    }

    /// Try to claim a pull-wake subscription as `worker`. Another holder and
    /// no pending work are normal answers ([`Claim::AlreadyClaimed`],
    /// [`Claim::NoPendingWork`]), not errors. A claim whose answer was lost
    /// is not repeated (it may have succeeded; the lease then lapses).
    pub async fn claim(&self, id: &str, worker: &str) -> Result<Claim> {
        check_id(id)?;
        if worker.is_empty() {
            return Err(Error::invalid_argument(
                "worker",
                "the worker name is empty",
            ));
        }
        let body = serde_json::to_vec(&serde_json::json!({ "worker": worker }))
            .map_err(json_encode_error)?;
        let spec = RequestSpec::new(Method::POST, "subscription_claim")
            .header(reqwest::header::CONTENT_TYPE, "application/json")?
            .body(Bytes::from(body));
        let url = self.id_url(id, &["claim"]);
        let stream = self.root.sibling(url);
        let resp = stream.execute(&spec).await?;
        if resp.status.is_success() && !looks_like_stream(&resp) {
            let body: ClaimBody = parse_json(&stream, &resp)?;
            return Ok(Claim::Claimed(Wake {
                subscription_id: id.to_owned(),
                wake_id: body.wake_id,
                generation: body.generation,
                streams: body.streams,
                lease_ttl: body.lease_ttl_ms,
                callback_url: None,
                token: body.token,
                source: WakeSource::Claim,
            }));
        }
        if let Some(err) = ErrorBody::parse(&resp.body) {
            match SubscriptionErrorCode::from_wire(&err.code) {
                SubscriptionErrorCode::AlreadyClaimed => {
                    return Ok(Claim::AlreadyClaimed {
                        holder: err.current_holder,
                        generation: err.generation,
                    });
                }
                SubscriptionErrorCode::NoPendingWork => return Ok(Claim::NoPendingWork),
                _ => {}
            }
        }
        Err(self.error(&stream, &spec, &resp))
    }

    /// Acknowledge progress on a held wake. Without `done` this is the
    /// heartbeat that extends the lease; with `done` the acks are applied
    /// and the lease released, and [`AckOutcome::next_wake`] says whether
    /// more work is already waiting. A stale wake gives
    /// [`SubscriptionErrorCode::Fenced`] and commits nothing. Claims ack at
    /// `/ack`, webhook wakes at `/callback` (both under this root).
    pub async fn ack(&self, wake: &Wake, acks: &[StreamAck], done: bool) -> Result<AckOutcome> {
        let action = match wake.source {
            WakeSource::Claim => "ack",
            WakeSource::Webhook => "callback",
        };
        let body = serde_json::json!({
            "wake_id": wake.wake_id,
            "generation": wake.generation,
            "acks": acks,
            "done": done,
        });
        // A heartbeat may be repeated; a lost `done` must not be (a repeat
        // would be fenced although the first one committed).
        let idempotency = if done {
            Idempotency::Unsafe
        } else {
            Idempotency::Safe
        };
        let operation = if done {
            "subscription_ack_done"
        } else {
            "subscription_heartbeat"
        };
        let spec = self
            .bearer_post(operation, wake, &body)?
            .idempotency(idempotency);
        let (resp, stream) = self
            .call(&self.id_url(&wake.subscription_id, &[action]), &spec)
            .await?;
        if resp.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(AckOutcome { next_wake: false });
        }
        parse_json(&stream, &resp)
    }

    /// Give a claimed wake back without acking (on shutdown, or when the
    /// work cannot be done here). If work is pending, the server issues a
    /// new wake for another worker. Webhook wakes cannot be released: let
    /// them lapse, or ack them.
    pub async fn release(&self, wake: &Wake) -> Result<()> {
        if wake.source != WakeSource::Claim {
            return Err(Error::invalid_argument(
                "wake",
                "only pull-wake claims can be released",
            ));
        }
        let body = serde_json::json!({ "wake_id": wake.wake_id, "generation": wake.generation });
        let spec = self
            .bearer_post("subscription_release", wake, &body)?
            .idempotency(Idempotency::Safe);
        self.call(&self.id_url(&wake.subscription_id, &["release"]), &spec)
            .await?;
        Ok(())
    }

    fn bearer_post(
        &self,
        operation: &'static str,
        wake: &Wake,
        body: &serde_json::Value,
    ) -> Result<RequestSpec> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", wake.token.expose_secret()))
            .map_err(|_| {
                Error::invalid_argument("token", "the wake token is not a valid header value")
            })?;
        value.set_sensitive(true);
        let mut spec = RequestSpec::new(Method::POST, operation)
            .header(reqwest::header::CONTENT_TYPE, "application/json")?
            .body(Bytes::from(
                serde_json::to_vec(body).map_err(json_encode_error)?,
            ));
        spec.headers.push((AUTHORIZATION, value));
        Ok(spec)
    }

    /// Before the first create, find out whether the server implements the
    /// `__ds` routes: a server without them would take the `PUT` for an
    /// ordinary stream create.
    async fn ensure_supported(&self, id: &str) -> Result<()> {
        if self.support.load(Ordering::Relaxed) == SUPPORTED {
            return Ok(());
        }
        match self.get(id).await {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Subscription {
                        code: SubscriptionErrorCode::NotFound
                    }
                ) => {}
            Err(e) => return Err(e),
        }
        self.support.store(SUPPORTED, Ordering::Relaxed);
        Ok(())
    }

    /// Send to `url`; a success that is really a stream response, or an
    /// error, becomes an `Err`.
    async fn call(&self, url: &url::Url, spec: &RequestSpec) -> Result<(BufferedResponse, Stream)> {
        let stream = self.root.sibling(url.clone());
        let resp = stream.execute(spec).await?;
        if resp.status.is_success() && !looks_like_stream(&resp) {
            return Ok((resp, stream));
        }
        Err(self.error(&stream, spec, &resp))
    }

    fn error(&self, stream: &Stream, spec: &RequestSpec, resp: &BufferedResponse) -> Error {
        let url = stream.url();
        let status = resp.status.as_u16();
        if let Some(body) = ErrorBody::parse(&resp.body) {
            let code = SubscriptionErrorCode::from_wire(&body.code);
            let message = match (code, body.message) {
                (SubscriptionErrorCode::Other, Some(m)) => format!("{}: {m}", body.code),
                (SubscriptionErrorCode::Other, None) => body.code,
                (_, Some(m)) => m,
                (_, None) => body.code,
            };
            return Error::new(ErrorKind::Subscription { code })
                .with_status(status)
                .with_url(url)
                .with_message(message);
        }
        if looks_like_stream(resp) || matches!(status, 404 | 405) {
            return unsupported(url, status);
        }
        error_from_response(spec, resp.status, &resp.headers, &resp.body).with_url(url)
    }

    fn url<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> url::Url {
        let mut url = self.root.url().clone();
        push_segments(&mut url, segments);
        url
    }

    fn id_url(&self, id: &str, tail: &[&str]) -> url::Url {
        let mut url = self.url(["__ds", "subscriptions", id]);
        push_segments(&mut url, tail.iter().copied());
        url
    }
}

/// Append path segments, each percent-encoded (a `/` inside one becomes `%2F`).
fn push_segments<'a>(url: &mut url::Url, segments: impl IntoIterator<Item = &'a str>) {
    // http(s) URLs always have path segments; `Err` only for cannot-be-a-base URLs.
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty();
        for segment in segments {
            path.push(segment);
        }
    }
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid_argument(
            "id",
            "the subscription id is empty",
        ));
    }
    Ok(())
}

/// A server without subscriptions treats `__ds/...` as a stream path: its
/// answers carry stream headers.
fn looks_like_stream(resp: &BufferedResponse) -> bool {
    resp.headers.contains_key(names::NEXT_OFFSET)
}

fn unsupported(url: &url::Url, status: u16) -> Error {
    Error::new(ErrorKind::Unsupported {
        feature: "subscriptions",
    })
    .with_status(status)
    .with_url(url)
    .with_message(
        "the server answered a `__ds` subscription route like an ordinary stream path \
         (no protocol error code); it does not implement PROTOCOL.md section 6",
    )
}

fn json_encode_error(e: serde_json::Error) -> Error {
    Error::new(ErrorKind::Internal).with_source(e)
}

fn parse_json<T: serde::de::DeserializeOwned>(
    stream: &Stream,
    resp: &BufferedResponse,
) -> Result<T> {
    serde_json::from_slice(&resp.body).map_err(|e| {
        Error::decode(
            crate::error::DecodeKind::Json,
            format!("unexpected subscription response: {e}"),
        )
        .with_status(resp.status.as_u16())
        .with_url(stream.url())
    })
}

/// `{"error": {"code": ..., "message": ..., "current_holder": ..., "generation": ...}}`.
#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    current_holder: Option<String>,
    #[serde(default)]
    generation: Option<u64>,
}

impl ErrorBody {
    fn parse(body: &[u8]) -> Option<ErrorBody> {
        #[derive(Deserialize)]
        struct Envelope {
            error: ErrorBody,
        }
        serde_json::from_slice::<Envelope>(body)
            .ok()
            .map(|e| e.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_ids_and_paths_as_single_segments() {
        let client = Client::new();
        let subs = client.subscriptions("http://h:1/").unwrap();
        assert_eq!(subs.root().as_str(), "http://h:1/v1/stream");
        let subs = client.subscriptions("http://h:1/v1/stream").unwrap();
        assert_eq!(
            subs.id_url("a b/c", &["claim"]).as_str(),
            "http://h:1/v1/stream/__ds/subscriptions/a%20b%2Fc/claim"
        );
        let mut url = subs.id_url("s", &["streams"]);
        push_segments(&mut url, ["events/x y"]);
        assert_eq!(
            url.as_str(),
            "http://h:1/v1/stream/__ds/subscriptions/s/streams/events%2Fx%20y"
        );
        let s = subs.stream("/events/abc/").unwrap();
        assert_eq!(s.url().as_str(), "http://h:1/v1/stream/events/abc");
        assert!(subs.stream("__ds/jwks.json").is_err());
    }

    #[test]
    fn error_bodies_parse() {
        let e = ErrorBody::parse(
            br#"{"error":{"code":"ALREADY_CLAIMED","current_holder":"w2","generation":7}}"#,
        )
        .unwrap();
        assert_eq!(e.code, "ALREADY_CLAIMED");
        assert_eq!(e.current_holder.as_deref(), Some("w2"));
        assert_eq!(e.generation, Some(7));
        assert!(ErrorBody::parse(b"Not found").is_none());
        assert!(ErrorBody::parse(br#"{"error":"x"}"#).is_none());
    }
}
