//! Subscription data: the spec sent on create, what the server reports back,
//! and the wake a worker or webhook receiver holds.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::offset::Offset;

/// Shortest lease the protocol allows.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);
/// Longest lease the protocol allows.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(600);
/// The server's lease when a spec sets none.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// How a subscription wakes its workers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Delivery {
    PullWake { wake_stream: String },
    Webhook { url: String },
}

/// What to create: the body of `PUT {root}/__ds/subscriptions/:id`.
/// Checked before anything is sent (see [`Subscriptions::create`](super::Subscriptions::create)).
///
/// ```
/// use std::time::Duration;
/// use durable_streams_client::subscription::SubscriptionSpec;
/// let spec = SubscriptionSpec::pull_wake("wake/orders")
///     .pattern("orders/*")
///     .lease_ttl(Duration::from_secs(10))
///     .description("order processors");
/// # let _ = spec;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    delivery: Delivery,
    pattern: Option<String>,
    streams: Vec<String>,
    lease_ttl: Option<Duration>,
    description: Option<String>,
}

impl SubscriptionSpec {
    /// A pull-wake subscription announcing work on `wake_stream` (a
    /// stream-root-relative path; the application creates that stream).
    pub fn pull_wake(wake_stream: impl Into<String>) -> Self {
        Self::with_delivery(Delivery::PullWake {
            wake_stream: wake_stream.into(),
        })
    }

    /// A webhook subscription: the server POSTs signed wake notifications to
    /// `url` (`https://`, or `http://localhost`/`127.0.0.x` in development).
    pub fn webhook(url: impl Into<String>) -> Self {
        Self::with_delivery(Delivery::Webhook { url: url.into() })
    }

    fn with_delivery(delivery: Delivery) -> Self {
        SubscriptionSpec {
            delivery,
            pattern: None,
            streams: Vec::new(),
            lease_ttl: None,
            description: None,
        }
    }

    /// A glob over stream-root-relative paths: `*` matches one segment, `**`
    /// any number. Streams already matching are linked at their tail.
    pub fn pattern(mut self, glob: impl Into<String>) -> Self {
        self.pattern = Some(glob.into());
        self
    }

    /// Link one stream explicitly (additive to the pattern).
    pub fn stream(mut self, path: impl Into<String>) -> Self {
        self.streams.push(path.into());
        self
    }

    /// Link several streams explicitly.
    pub fn streams<I, S>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.streams.extend(paths.into_iter().map(Into::into));
        self
    }

    /// How long a claim (or a webhook wake) stays valid without a heartbeat:
    /// 1 s to 10 min, whole milliseconds (server default 30 s).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = Some(ttl);
        self
    }

    /// A human-readable description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// The wake stream of a pull-wake spec.
    pub fn wake_stream(&self) -> Option<&str> {
        match &self.delivery {
            Delivery::PullWake { wake_stream } => Some(wake_stream),
            Delivery::Webhook { .. } => None,
        }
    }

    /// Check every rule the protocol states for a create (PROTOCOL.md 6.2).
    pub(crate) fn validate(&self) -> Result<()> {
        if self.pattern.is_none() && self.streams.is_empty() {
            return Err(Error::invalid_argument(
                "streams",
                "a subscription needs a pattern, explicit streams, or both",
            ));
        }
        if let Some(pattern) = &self.pattern {
            check_path("pattern", pattern)?;
        }
        for path in &self.streams {
            check_path("streams", path)?;
        }
        match &self.delivery {
            Delivery::PullWake { wake_stream } => check_path("wake_stream", wake_stream)?,
            Delivery::Webhook { url } => check_webhook_url(url)?,
        }
        if let Some(ttl) = self.lease_ttl {
            if !(MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&ttl) {
                return Err(Error::invalid_argument(
                    "lease_ttl",
                    format!("the lease must be between 1 s and 10 min, got {ttl:?}"),
                ));
            }
            if ttl.subsec_nanos() % 1_000_000 != 0 {
                return Err(Error::invalid_argument(
                    "lease_ttl",
                    format!("the lease must be whole milliseconds, got {ttl:?}"),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        let (kind, extra) = match &self.delivery {
            Delivery::PullWake { wake_stream } => (
                "pull-wake",
                (
                    "wake_stream",
                    serde_json::json!(normalize_path(wake_stream)),
                ),
            ),
            Delivery::Webhook { url } => {
                ("webhook", ("webhook", serde_json::json!({ "url": url })))
            }
        };
        body.insert("type".into(), kind.into());
        body.insert(extra.0.into(), extra.1);
        if let Some(p) = &self.pattern {
            body.insert("pattern".into(), normalize_path(p).into());
        }
        if !self.streams.is_empty() {
            let streams: Vec<_> = self.streams.iter().map(|s| normalize_path(s)).collect();
            body.insert("streams".into(), streams.into());
        }
        if let Some(ttl) = self.lease_ttl {
            body.insert("lease_ttl_ms".into(), (ttl.as_millis() as u64).into());
        }
        if let Some(d) = &self.description {
            body.insert("description".into(), d.clone().into());
        }
        serde_json::Value::Object(body)
    }
}

/// Stream paths are root-relative: no leading or trailing slash.
pub(crate) fn normalize_path(path: &str) -> &str {
    path.trim_matches('/')
}

/// A stream-root-relative path (or glob) that is not empty and does not
/// reach into the reserved `__ds` control namespace.
pub(crate) fn check_path(field: &'static str, path: &str) -> Result<()> {
    let path = normalize_path(path);
    if path.is_empty() {
        return Err(Error::invalid_argument(
            field,
            "a stream path must not be empty",
        ));
    }
    if path == "__ds" || path.starts_with("__ds/") {
        return Err(Error::invalid_argument(
            field,
            format!("{path:?} is under the reserved `__ds` control prefix"),
        ));
    }
    if path
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(Error::invalid_argument(
            field,
            format!("{path:?} has an empty, `.` or `..` segment"),
        ));
    }
    Ok(())
}

fn check_webhook_url(raw: &str) -> Result<()> {
    let url = url::Url::parse(raw).map_err(|e| {
        Error::invalid_argument("webhook.url", format!("{raw:?} is not a URL: {e}"))
    })?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if matches!(url.host_str(), Some(h) if h == "localhost" || h.starts_with("127.")) => {
            Ok(())
        }
        _ => Err(Error::invalid_argument(
            "webhook.url",
            "webhook URLs must use https (http only for localhost or 127.0.0.x in development)",
        )),
    }
}

/// How a subscription delivers wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SubscriptionType {
    /// Wake events are appended to a wake stream; workers claim.
    PullWake,
    /// The server POSTs signed notifications to a URL.
    Webhook,
    /// A type this client does not know.
    #[serde(other)]
    Other,
}

/// Whether delivery is working (`failed` while a webhook retry is scheduled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SubscriptionStatus {
    /// Delivering normally.
    Active,
    /// A webhook delivery failed; a retry is scheduled.
    Failed,
    /// A status this client does not know.
    #[serde(other)]
    Other,
}

/// How a stream came to be linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LinkType {
    /// Matched by the pattern.
    Glob,
    /// Added by name (takes precedence when both apply).
    Explicit,
    /// A link type this client does not know.
    #[serde(other)]
    Other,
}

/// One linked stream and its cursor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct StreamLink {
    /// Stream-root-relative path.
    pub path: String,
    /// Glob or explicit.
    pub link_type: LinkType,
    /// Last processed offset, inclusive: the next read starts after it.
    pub acked_offset: Offset,
}

/// A webhook subscription's target and signing metadata.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct WebhookTarget {
    /// Where notifications are POSTed.
    pub url: String,
    /// How they are signed, when the server says.
    #[serde(default)]
    pub signing: Option<WebhookSigning>,
}

/// Signing metadata of a webhook subscription (PROTOCOL.md 6.3).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct WebhookSigning {
    /// Algorithm (`ed25519`).
    pub alg: String,
    /// The server's active key id.
    pub kid: String,
    /// Where the server publishes its public keys.
    pub jwks_url: String,
}

/// A subscription as the server reports it (`GET {root}/__ds/subscriptions/:id`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Subscription {
    /// The subscription id.
    pub id: String,
    /// Pull-wake or webhook.
    #[serde(rename = "type")]
    pub kind: SubscriptionType,
    /// The glob, if any.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Every linked stream with its acked offset.
    #[serde(default)]
    pub streams: Vec<StreamLink>,
    /// Webhook target (webhook subscriptions).
    #[serde(default)]
    pub webhook: Option<WebhookTarget>,
    /// Wake stream (pull-wake subscriptions).
    #[serde(default)]
    pub wake_stream: Option<String>,
    /// Lease duration.
    #[serde(rename = "lease_ttl_ms", deserialize_with = "millis")]
    pub lease_ttl: Duration,
    /// Creation time as the server wrote it (RFC 3339).
    #[serde(default)]
    pub created_at: Option<String>,
    /// Delivery status.
    pub status: SubscriptionStatus,
    /// The description, if any.
    #[serde(default)]
    pub description: Option<String>,
}

/// The answer to a create: the subscription, and whether it was new.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Confirmed {
    /// The subscription as the server stored it.
    pub subscription: Subscription,
    /// `true` for 201 (created), `false` for 200 (an identical one existed).
    pub created: bool,
}

/// A linked stream in a wake snapshot: where its cursor is and where the
/// tail was when the wake was issued.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct PendingStream {
    /// Stream-root-relative path.
    pub path: String,
    /// Glob or explicit.
    #[serde(skip_serializing)]
    pub link_type: LinkType,
    /// Last processed offset: read from here.
    pub acked_offset: Offset,
    /// The tail when the wake was issued: read at least up to here.
    pub tail_offset: Offset,
    /// Whether the stream had unprocessed data.
    pub has_pending: bool,
}

/// A secret bearer token (claim or callback token). Never shown in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(String);

impl SecretToken {
    pub(crate) fn new(token: String) -> Self {
        SecretToken(token)
    }

    /// The token itself, for handing a wake to another process that will
    /// complete it. Treat it like a password.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for SecretToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(SecretToken)
    }
}

/// Where a wake came from, which decides where it is acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WakeSource {
    /// A pull-wake claim: `/ack` and `/release`.
    Claim,
    /// A webhook notification: `/callback`.
    Webhook,
}

/// A wake this process holds: from a pull-wake [claim](super::Subscriptions::claim)
/// or a verified webhook notification. Complete it with
/// [`Subscriptions::ack`](super::Subscriptions::ack) (heartbeats and the
/// final `done`), or [`release`](super::Subscriptions::release) a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Wake {
    /// The subscription.
    pub subscription_id: String,
    /// Unique per wake.
    pub wake_id: String,
    /// The subscription's fencing counter.
    pub generation: u64,
    /// The linked streams and their pending ranges.
    pub streams: Vec<PendingStream>,
    /// The lease, when the server stated it (claims do).
    pub lease_ttl: Option<Duration>,
    /// The server's callback URL (webhook wakes), for information: the
    /// library calls back under its own root, so a notification cannot
    /// redirect credentials elsewhere.
    pub callback_url: Option<String>,
    pub(crate) token: SecretToken,
    pub(crate) source: WakeSource,
}

impl Wake {
    /// The claim or callback token.
    pub fn token(&self) -> &SecretToken {
        &self.token
    }

    /// The streams with data to process.
    pub fn pending(&self) -> impl Iterator<Item = &PendingStream> {
        self.streams.iter().filter(|s| s.has_pending)
    }

    /// Assemble a webhook wake from a notification's fields (used by the
    /// webhook verifier once the signature checked out).
    pub(crate) fn from_webhook(
        subscription_id: String,
        wake_id: String,
        generation: u64,
        streams: Vec<PendingStream>,
        callback_url: Option<String>,
        token: SecretToken,
    ) -> Wake {
        Wake {
            subscription_id,
            wake_id,
            generation,
            streams,
            lease_ttl: None,
            callback_url,
            token,
            source: WakeSource::Webhook,
        }
    }
}

/// The outcome of a claim: holding a wake, or one of the two normal
/// "nothing for you" answers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// This worker holds the lease until it acks with `done`, releases, or
    /// stops heartbeating for a lease's time.
    Claimed(Wake),
    /// Another worker holds the lease (409 `ALREADY_CLAIMED`).
    AlreadyClaimed {
        /// The holder's worker name, if the server said.
        holder: Option<String>,
        /// The current generation, if the server said.
        generation: Option<u64>,
    },
    /// Every linked stream is acked up to its tail (409 `NO_PENDING_WORK`).
    NoPendingWork,
}

/// One stream's progress to acknowledge: processed up to `offset`, inclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamAck {
    /// Stream-root-relative path.
    pub stream: String,
    /// The offset after the last processed message (a read's next offset).
    pub offset: Offset,
}

impl StreamAck {
    /// Progress of `stream` up to `offset`.
    pub fn new(stream: impl Into<String>, offset: Offset) -> Self {
        StreamAck {
            stream: stream.into(),
            offset,
        }
    }
}

/// The answer to an ack with `done` (or a heartbeat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct AckOutcome {
    /// More work arrived after the snapshot: a new wake was issued.
    #[serde(default)]
    pub next_wake: bool,
}

fn millis<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

/// The wire shape of a successful claim.
#[derive(Deserialize)]
pub(crate) struct ClaimBody {
    pub(crate) wake_id: String,
    pub(crate) generation: u64,
    pub(crate) token: SecretToken,
    #[serde(default)]
    pub(crate) streams: Vec<PendingStream>,
    #[serde(default, deserialize_with = "opt_millis")]
    pub(crate) lease_ttl_ms: Option<Duration>,
}

fn opt_millis<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Duration>, D::Error> {
    Option::<u64>::deserialize(d).map(|o| o.map(Duration::from_millis))
}

#[cfg(test)]
#[path = "types_tests.rs"]
mod tests;
