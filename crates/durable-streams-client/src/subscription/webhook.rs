//! Webhook receivers: verify a signed wake notification, then complete it
//! (PROTOCOL.md sections 6.5, 7.1 and 12.10).
//!
//! A [`WebhookVerifier`] checks each delivery before any work is done: the
//! `Webhook-Signature` header (`t=<unix seconds>,kid=<key id>,ed25519=<signature>`),
//! the timestamp against a replay window, the Ed25519 signature over
//! `<t>.<raw body>` with the key the header names (from the server's JWK Set
//! at `{root}/__ds/jwks.json`, cached), and optionally the subscription id.
//! It yields a [`Wake`] to complete in one of two ways:
//!
//! * **Synchronously**: do the work inside the request and answer
//!   [`WebhookResponse::done()`] (`200`, `{"done":true}`). The server then
//!   acks every stream up to the tail offsets of the wake snapshot and
//!   releases the wake. Only for work that fits well inside the server's
//!   request timeout and the lease.
//! * **Asynchronously**: answer [`WebhookResponse::accepted()`] (`200`, `{}`)
//!   at once, do the work elsewhere, and finish with
//!   [`Subscriptions::ack`] (`done = true`; without `done` it is a heartbeat
//!   that extends the lease). A wake that is no longer current (already
//!   completed, its lease lapsed, or a newer wake issued) is refused with
//!   [`SubscriptionErrorCode::Fenced`](crate::SubscriptionErrorCode::Fenced)
//!   and commits nothing: drop it, the next wake starts from the last acked
//!   offsets.
//!
//! A delivery that fails verification is an error of kind
//! [`ErrorKind::WebhookRejected`] (answer it 401 and do nothing); any other
//! error (the key set could not be fetched) should be answered 503 so that
//! the server retries. Any non-2xx answer makes the server retry the
//! delivery with backoff.
//!
//! ```no_run
//! # async fn demo(subs: durable_streams_client::subscription::Subscriptions,
//! #               headers: reqwest::header::HeaderMap, body: bytes::Bytes)
//! #               -> durable_streams_client::Result<()> {
//! use durable_streams_client::subscription::{WebhookResponse, WebhookVerifier};
//! let verifier = WebhookVerifier::builder(&subs).subscription("orders-0").build();
//! // In the HTTP handler, with the raw body bytes:
//! let wake = verifier.verify(&headers, &body).await?;
//! for pending in wake.pending() {
//!     // read pending.path from pending.acked_offset up to pending.tail_offset
//! }
//! let answer = WebhookResponse::done(); // 200, answer.content_type(), answer.body()
//! # let _ = answer; Ok(()) }
//! ```
//!
//! One file on purpose: header parsing, the key cache and the checks are
//! kept together so the order of the checks (cheap, then crypto, then the
//! body) is visible in one place.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, VerifyingKey};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::Deserialize;

use super::{PendingStream, SecretToken, Subscriptions, Wake};
use crate::error::{DecodeKind, Error, ErrorKind, Result, WebhookRejection};
use crate::request::RequestSpec;

/// The header carrying a delivery's signature (lowercase, as `http` names it).
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// How far a signature's timestamp may be from this machine's clock, either
/// way, by default: five minutes (PROTOCOL.md 7.1).
pub const DEFAULT_REPLAY_WINDOW: Duration = Duration::from_secs(300);

/// The least time between two fetches of the server's key set by default,
/// so that deliveries naming unknown keys cannot make the receiver hammer
/// the server.
pub const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// How long fetched keys are trusted before they are fetched again by
/// default (the reference servers' `Cache-Control: max-age=300`).
pub const DEFAULT_KEYS_MAX_AGE: Duration = Duration::from_secs(300);

/// Longest accepted `Webhook-Signature` header: a timestamp, a key id and a
/// signature need far less.
const MAX_HEADER_LEN: usize = 1024;

/// Verifies webhook deliveries and turns them into [`Wake`]s. Cheap to
/// clone; clones share the key cache. Built by [`WebhookVerifier::builder`]
/// (keys fetched from the server) or [`WebhookVerifier::builder_from_jwks`]
/// (a fixed key set).
#[derive(Clone)]
pub struct WebhookVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    replay_window: Duration,
    min_refetch_interval: Duration,
    keys_max_age: Duration,
    expected: Option<HashSet<String>>,
    cache: Mutex<KeyCache>,
    /// One fetch at a time; waiters re-check the cache afterwards.
    fetching: tokio::sync::Mutex<()>,
}

enum Source {
    /// A fixed key set: never fetched.
    Fixed,
    /// `{root}/__ds/jwks.json` of this server, through the client's own
    /// request path (its headers, credentials and retries).
    Server(Subscriptions),
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, VerifyingKey>,
    /// When the keys were last fetched successfully.
    fetched_at: Option<Instant>,
    /// When a fetch was last started (successful or not): the rate limit.
    attempted_at: Option<Instant>,
}

/// Configures a [`WebhookVerifier`].
#[derive(Debug)]
pub struct WebhookVerifierBuilder {
    source: Source,
    keys: HashMap<String, VerifyingKey>,
    replay_window: Duration,
    min_refetch_interval: Duration,
    keys_max_age: Duration,
    expected: Option<HashSet<String>>,
}

impl WebhookVerifier {
    /// A verifier for deliveries from the server behind `subs`, with the
    /// defaults. Its key set is fetched on first use.
    pub fn new(subs: &Subscriptions) -> WebhookVerifier {
        Self::builder(subs).build()
    }

    /// Configure a verifier whose keys come from `{root}/__ds/jwks.json` of
    /// the server behind `subs`, fetched with the client's headers,
    /// credentials and retries on first use, again when they are older than
    /// [`keys_max_age`](WebhookVerifierBuilder::keys_max_age), and again
    /// (at most once per [`min_refetch_interval`](WebhookVerifierBuilder::min_refetch_interval))
    /// when a delivery names a key id not in the cache (key rotation).
    pub fn builder(subs: &Subscriptions) -> WebhookVerifierBuilder {
        WebhookVerifierBuilder::new(Source::Server(subs.clone()), HashMap::new())
    }

    /// Configure a verifier that trusts exactly the keys of `jwks`, a JSON
    /// Web Key Set as the server publishes it (`{"keys": [{"kty": "OKP",
    /// "crv": "Ed25519", "kid": ..., "x": ...}]}`), and never fetches any.
    /// For tests, offline receivers, or pinning one server's keys. Keys
    /// other than Ed25519 signing keys are ignored; a malformed set, an
    /// Ed25519 key that is not a valid public key, or a repeated `kid` is an
    /// error of kind [`ErrorKind::InvalidArgument`].
    pub fn builder_from_jwks(jwks: &[u8]) -> Result<WebhookVerifierBuilder> {
        let keys = parse_jwks(jwks).map_err(|message| Error::invalid_argument("jwks", message))?;
        Ok(WebhookVerifierBuilder::new(Source::Fixed, keys))
    }

    /// Verify one delivery from its request headers and its raw body (the
    /// exact bytes received: verify before any parsing or re-encoding).
    /// On success, the wake to complete; a delivery that fails a check is an
    /// error of kind [`ErrorKind::WebhookRejected`] naming the
    /// [`WebhookRejection`]. Fetching the key set can fail with the usual
    /// request errors.
    pub async fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Wake> {
        let mut values = headers.get_all(SIGNATURE_HEADER).iter();
        let signature = match (values.next(), values.next()) {
            (None, _) => None,
            (Some(value), None) => Some(value.to_str().map_err(|_| {
                rejected(
                    WebhookRejection::MalformedSignature,
                    "the Webhook-Signature header is not ASCII text",
                )
            })?),
            (Some(_), Some(_)) => {
                return Err(rejected(
                    WebhookRejection::MalformedSignature,
                    "more than one Webhook-Signature header",
                ));
            }
        };
        self.verify_signature(signature, body).await
    }

    /// Like [`verify`](Self::verify), given the `Webhook-Signature` header's
    /// value (`None` when absent), for frameworks with their own header
    /// types.
    pub async fn verify_signature(&self, signature: Option<&str>, body: &[u8]) -> Result<Wake> {
        let result = self.check(signature, body).await;
        if let Err(e) = &result
            && let ErrorKind::WebhookRejected { reason } = e.kind()
        {
            tracing::debug!(reason = reason.as_str(), error = %e, "webhook delivery rejected");
        }
        result
    }

    async fn check(&self, signature: Option<&str>, body: &[u8]) -> Result<Wake> {
        let header = signature.ok_or_else(|| {
            rejected(
                WebhookRejection::MissingSignature,
                "the request has no Webhook-Signature header",
            )
        })?;
        let parsed = SignatureHeader::parse(header)?;
        self.check_timestamp(parsed.timestamp)?;
        let key = self.key_for(parsed.kid).await?;
        let mut message = Vec::with_capacity(parsed.timestamp_text.len() + 1 + body.len());
        message.extend_from_slice(parsed.timestamp_text.as_bytes());
        message.push(b'.');
        message.extend_from_slice(body);
        key.verify_strict(&message, &parsed.signature).map_err(|_| {
            rejected(
                WebhookRejection::BadSignature,
                format!(
                    "the Ed25519 signature does not match the timestamp and body under key {:?}",
                    parsed.kid
                ),
            )
        })?;
        let wake = parse_notification(body)?;
        if let Some(expected) = &self.inner.expected
            && !expected.contains(&wake.subscription_id)
        {
            return Err(rejected(
                WebhookRejection::UnexpectedSubscription,
                format!(
                    "subscription {:?} is not one this receiver serves",
                    wake.subscription_id
                ),
            ));
        }
        Ok(wake)
    }

    fn check_timestamp(&self, timestamp: u64) -> Result<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let window = self.inner.replay_window.as_secs();
        if now > timestamp && now - timestamp > window {
            return Err(rejected(
                WebhookRejection::OutsideReplayWindow,
                format!(
                    "signed {} s ago; the replay window is {window} s",
                    now - timestamp
                ),
            ));
        }
        if timestamp > now && timestamp - now > window {
            return Err(rejected(
                WebhookRejection::OutsideReplayWindow,
                format!(
                    "signed {} s in the future; the replay window is {window} s (check the clocks)",
                    timestamp - now
                ),
            ));
        }
        Ok(())
    }

    /// The key named `kid`: from the cache while it is fresh, else fetched
    /// (at most once per `min_refetch_interval`, one fetch at a time).
    async fn key_for(&self, kid: &str) -> Result<VerifyingKey> {
        let inner = &self.inner;
        let subs = match &inner.source {
            Source::Fixed => {
                return self.cached(kid).ok_or_else(|| {
                    unknown_key(kid, "it is not in the configured key set".to_owned())
                });
            }
            Source::Server(subs) => subs,
        };
        if let Some(key) = self.cached_fresh(kid) {
            return Ok(key);
        }
        let _one_fetch = inner.fetching.lock().await;
        // Another delivery may have fetched while this one waited.
        if let Some(key) = self.cached_fresh(kid) {
            return Ok(key);
        }
        let last_attempt = self.lock_cache().attempted_at;
        if let Some(at) = last_attempt
            && at.elapsed() < inner.min_refetch_interval
        {
            // Too soon to ask the server again: a stale key still serves.
            return self.cached(kid).ok_or_else(|| {
                let wait = inner.min_refetch_interval.saturating_sub(at.elapsed());
                unknown_key(
                    kid,
                    format!(
                        "it is not in the server's key set as last fetched, and the next \
                         fetch is allowed in {} ms",
                        wait.as_millis()
                    ),
                )
            });
        }
        self.lock_cache().attempted_at = Some(Instant::now());
        match fetch_jwks(subs).await {
            Ok(keys) => {
                tracing::debug!(keys = keys.len(), "fetched the webhook signing keys");
                let mut cache = self.lock_cache();
                cache.keys = keys;
                cache.fetched_at = Some(Instant::now());
            }
            Err(e) => match self.cached(kid) {
                Some(key) => {
                    tracing::warn!(error = %e, "could not refresh the webhook signing keys; using the cached ones");
                    return Ok(key);
                }
                None => return Err(e),
            },
        }
        self.cached(kid).ok_or_else(|| {
            unknown_key(
                kid,
                "it is not in the server's key set, fetched just now".to_owned(),
            )
        })
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        // The cache holds no invariant a panic could break.
        self.inner
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cached(&self, kid: &str) -> Option<VerifyingKey> {
        self.lock_cache().keys.get(kid).copied()
    }

    fn cached_fresh(&self, kid: &str) -> Option<VerifyingKey> {
        let cache = self.lock_cache();
        let fresh = cache
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.inner.keys_max_age);
        if fresh {
            cache.keys.get(kid).copied()
        } else {
            None
        }
    }

    /// Fetch the server's key set now, whatever the cache and the refetch
    /// limit say (for example at startup, to fail early when the server
    /// cannot be reached). A verifier with a fixed key set has nothing to
    /// fetch and returns `Ok`.
    pub async fn refresh_keys(&self) -> Result<()> {
        let Source::Server(subs) = &self.inner.source else {
            return Ok(());
        };
        let _one_fetch = self.inner.fetching.lock().await;
        self.lock_cache().attempted_at = Some(Instant::now());
        let keys = fetch_jwks(subs).await?;
        let mut cache = self.lock_cache();
        cache.keys = keys;
        cache.fetched_at = Some(Instant::now());
        Ok(())
    }

    /// The key ids currently cached, sorted.
    pub fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock_cache().keys.keys().cloned().collect();
        ids.sort();
        ids
    }
}

impl fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        let mut d = f.debug_struct("WebhookVerifier");
        match &inner.source {
            Source::Fixed => d.field("keys", &"fixed"),
            Source::Server(subs) => d.field("keys_from", &subs.root().as_str()),
        };
        d.field("key_ids", &self.key_ids())
            .field("replay_window", &inner.replay_window)
            .field("min_refetch_interval", &inner.min_refetch_interval)
            .field("keys_max_age", &inner.keys_max_age)
            .field("expected", &inner.expected)
            .finish()
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Fixed => f.write_str("Fixed"),
            Source::Server(subs) => write!(f, "Server({})", subs.root()),
        }
    }
}

impl WebhookVerifierBuilder {
    fn new(source: Source, keys: HashMap<String, VerifyingKey>) -> Self {
        WebhookVerifierBuilder {
            source,
            keys,
            replay_window: DEFAULT_REPLAY_WINDOW,
            min_refetch_interval: DEFAULT_MIN_REFETCH_INTERVAL,
            keys_max_age: DEFAULT_KEYS_MAX_AGE,
            expected: None,
        }
    }

    /// How far a signature's timestamp may be from this machine's clock, in
    /// the past or the future (default [`DEFAULT_REPLAY_WINDOW`], five
    /// minutes; whole seconds count). A replayed delivery older than this
    /// is rejected; keep it short.
    pub fn replay_window(mut self, window: Duration) -> Self {
        self.replay_window = window;
        self
    }

    /// The least time between two fetches of the key set (default
    /// [`DEFAULT_MIN_REFETCH_INTERVAL`]). Within it, a delivery naming an
    /// unknown key is rejected without asking the server.
    pub fn min_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_refetch_interval = interval;
        self
    }

    /// How long fetched keys are trusted before the next delivery fetches
    /// them again (default [`DEFAULT_KEYS_MAX_AGE`]), so that a key the
    /// server withdrew stops being accepted. If that fetch fails, the cached
    /// keys go on serving.
    pub fn keys_max_age(mut self, age: Duration) -> Self {
        self.keys_max_age = age;
        self
    }

    /// Accept deliveries for subscription `id` (may be repeated). Once any
    /// id is given, deliveries for other subscriptions are rejected with
    /// [`WebhookRejection::UnexpectedSubscription`] (PROTOCOL.md 12.10: a
    /// receiver shared by several subscriptions or servers should check).
    pub fn subscription(mut self, id: impl Into<String>) -> Self {
        self.expected
            .get_or_insert_with(HashSet::new)
            .insert(id.into());
        self
    }

    /// Accept deliveries for each of `ids` (see [`subscription`](Self::subscription)).
    pub fn subscriptions<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let expected = self.expected.get_or_insert_with(HashSet::new);
        expected.extend(ids.into_iter().map(Into::into));
        self
    }

    /// The verifier.
    pub fn build(self) -> WebhookVerifier {
        WebhookVerifier {
            inner: Arc::new(Inner {
                source: self.source,
                replay_window: self.replay_window,
                min_refetch_interval: self.min_refetch_interval,
                keys_max_age: self.keys_max_age,
                expected: self.expected,
                cache: Mutex::new(KeyCache {
                    keys: self.keys,
                    ..KeyCache::default()
                }),
                fetching: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

/// What a webhook handler answers when the delivery checked out: status
/// `200` with a JSON body.
///
/// * [`done()`](Self::done): the work is finished; the server acks the
///   wake snapshot's tail offsets and releases the wake.
/// * [`accepted()`](Self::accepted): the work goes on elsewhere and will be
///   finished with [`Subscriptions::ack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebhookResponse {
    /// `{"done":true}`.
    Done,
    /// `{}`.
    Accepted,
}

impl WebhookResponse {
    /// Finished synchronously: `{"done":true}`.
    pub fn done() -> Self {
        WebhookResponse::Done
    }

    /// Accepted; the callback follows: `{}`.
    pub fn accepted() -> Self {
        WebhookResponse::Accepted
    }

    /// The HTTP status to answer: `200`.
    pub fn status(&self) -> u16 {
        200
    }

    /// The `Content-Type` to answer: `application/json`.
    pub fn content_type(&self) -> &'static str {
        "application/json"
    }

    /// The body to answer.
    pub fn body(&self) -> &'static [u8] {
        match self {
            WebhookResponse::Done => br#"{"done":true}"#,
            WebhookResponse::Accepted => b"{}",
        }
    }
}

fn rejected(reason: WebhookRejection, message: impl Into<String>) -> Error {
    Error::webhook_rejected(reason, message)
}

fn unknown_key(kid: &str, why: String) -> Error {
    rejected(
        WebhookRejection::UnknownKey,
        format!("no signing key {kid:?}: {why}"),
    )
}

/// A parsed `Webhook-Signature` header.
#[derive(Debug)]
struct SignatureHeader<'a> {
    /// The timestamp as sent: the signed message starts with it.
    timestamp_text: &'a str,
    timestamp: u64,
    kid: &'a str,
    signature: Signature,
}

impl<'a> SignatureHeader<'a> {
    /// Exactly the parameters `t`, `kid` and `ed25519`, each once, separated
    /// by commas without spaces (any order). `t` is decimal digits, `kid`
    /// printable ASCII, `ed25519` unpadded base64url of 64 bytes.
    fn parse(header: &'a str) -> Result<Self> {
        let malformed = |why: &str| {
            rejected(
                WebhookRejection::MalformedSignature,
                format!("{why} (expected t=<unix seconds>,kid=<key id>,ed25519=<base64url>)"),
            )
        };
        if header.len() > MAX_HEADER_LEN {
            return Err(malformed("the header is too long"));
        }
        let (mut t, mut kid, mut sig) = (None, None, None);
        for part in header.split(',') {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| malformed(&format!("parameter {part:?} has no `=`")))?;
            let slot = match name {
                "t" => &mut t,
                "kid" => &mut kid,
                "ed25519" => &mut sig,
                _ => return Err(malformed(&format!("unknown parameter {name:?}"))),
            };
            if slot.replace(value).is_some() {
                return Err(malformed(&format!("parameter {name:?} is repeated")));
            }
        }
        let (Some(t), Some(kid), Some(sig)) = (t, kid, sig) else {
            return Err(malformed("a parameter is missing"));
        };
        if t.is_empty() || t.len() > 19 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed("`t` is not a Unix timestamp in seconds"));
        }
        let timestamp = t
            .parse::<u64>()
            .map_err(|_| malformed("`t` is not a Unix timestamp in seconds"))?;
        if kid.is_empty() || !kid.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(malformed("`kid` is empty or not printable ASCII"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| malformed("`ed25519` is not unpadded base64url"))?;
        let bytes: [u8; 64] = bytes
            .try_into()
            .map_err(|_| malformed("`ed25519` is not a 64-byte signature"))?;
        Ok(SignatureHeader {
            timestamp_text: t,
            timestamp,
            kid,
            signature: Signature::from_bytes(&bytes),
        })
    }
}

/// The body of a wake notification, without its token.
#[derive(Deserialize)]
struct Notification {
    subscription_id: String,
    wake_id: String,
    generation: u64,
    #[serde(default)]
    streams: Vec<PendingStream>,
    #[serde(default)]
    callback_url: Option<String>,
}

/// The wake in a (verified) notification body. The callback token is taken
/// out before the rest is decoded, so no decoding error can quote it.
fn parse_notification(body: &[u8]) -> Result<Wake> {
    let malformed = |message: String| rejected(WebhookRejection::MalformedBody, message);
    let mut value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        malformed(format!(
            "the body is not JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| malformed("the body is not a JSON object".to_owned()))?;
    let token = match object.remove("callback_token") {
        Some(serde_json::Value::String(token)) => token,
        Some(_) => return Err(malformed("`callback_token` is not a string".to_owned())),
        None => return Err(malformed("`callback_token` is missing".to_owned())),
    };
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(malformed(
            "`callback_token` is empty or not printable ASCII".to_owned(),
        ));
    }
    let notification: Notification = serde_json::from_value(value).map_err(|e| {
        // The same text could appear elsewhere in the body; never echo it.
        let text = e.to_string().replace(&token, "<redacted>");
        malformed(format!("not a wake notification: {text}"))
    })?;
    if notification.subscription_id.is_empty() || notification.wake_id.is_empty() {
        return Err(malformed(
            "`subscription_id` or `wake_id` is empty".to_owned(),
        ));
    }
    Ok(Wake::from_webhook(
        notification.subscription_id,
        notification.wake_id,
        notification.generation,
        notification.streams,
        notification.callback_url,
        SecretToken::new(token),
    ))
}

/// A JSON Web Key as far as this verifier reads it.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    alg: Option<String>,
}

/// The Ed25519 signing keys of a JWK Set, by `kid`. Other keys are skipped.
fn parse_jwks(body: &[u8]) -> std::result::Result<HashMap<String, VerifyingKey>, String> {
    #[derive(Deserialize)]
    struct JwkSet {
        keys: Vec<serde_json::Value>,
    }
    let set: JwkSet =
        serde_json::from_slice(body).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
    let mut keys = HashMap::new();
    for raw in set.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
            continue;
        };
        let ed25519 = jwk.kty == "OKP" && jwk.crv.as_deref() == Some("Ed25519");
        let signing = jwk.usage.as_deref().is_none_or(|u| u == "sig");
        let eddsa = jwk
            .alg
            .as_deref()
            .is_none_or(|a| a == "EdDSA" || a == "Ed25519");
        let (Some(kid), Some(x)) = (jwk.kid, jwk.x) else {
            continue;
        };
        if !(ed25519 && signing && eddsa) {
            continue;
        }
        let key = URL_SAFE_NO_PAD
            .decode(&x)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
            .ok_or_else(|| format!("key {kid:?} is not a valid Ed25519 public key"))?;
        if keys.insert(kid.clone(), key).is_some() {
            return Err(format!("key id {kid:?} appears more than once"));
        }
    }
    Ok(keys)
}

/// `GET {root}/__ds/jwks.json` through the client's request path.
async fn fetch_jwks(subs: &Subscriptions) -> Result<HashMap<String, VerifyingKey>> {
    let url = subs.url(["__ds", "jwks.json"]);
    let stream = subs.root.sibling(url);
    let spec = RequestSpec::new(Method::GET, "webhook_jwks");
    let resp = stream.execute(&spec).await?;
    if matches!(resp.status.as_u16(), 404 | 405) {
        return Err(Error::new(ErrorKind::Unsupported {
            feature: "webhook signing keys",
        })
        .with_status(resp.status.as_u16())
        .with_url(stream.url())
        .with_message("the server publishes no key set at `__ds/jwks.json` (PROTOCOL.md 6.5)"));
    }
    if !resp.status.is_success() {
        return Err(stream.error_for(&spec, &resp));
    }
    parse_jwks(&resp.body).map_err(|message| {
        Error::decode(DecodeKind::Json, message)
            .with_status(resp.status.as_u16())
            .with_url(stream.url())
    })
}

#[cfg(test)]
#[path = "webhook_tests.rs"]
mod tests;
