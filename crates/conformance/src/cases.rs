//! The YAML case model and the loader.
//!
//! Every mapping in a case file is parsed into a typed struct with
//! `#[serde(deny_unknown_fields)]`, so a key this runner does not know is a
//! load error for that file instead of being silently ignored, which is what
//! the authors' Node runner does (CASE-FORMAT §1, §10.3). Fields are typed as
//! tightly as the format allows: a field that the runner substitutes must be a
//! string, a count must be an integer, and so on.
//!
//! Discovery follows CASE-FORMAT §1: a depth-first walk that sorts each
//! directory's entries by the byte-wise order of their names (not by whole
//! relative paths), loads `*.yaml` / `*.yml` regular files, and neither
//! follows nor loads symlinks.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value as YamlValue;

/// One case file: a suite of tests (CASE-FORMAT §2).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// Suite id, shown as `suite-id/test-id` in the failure list.
    pub id: String,
    /// Human-readable heading.
    pub name: String,
    /// Free text; parsed so the key is known, not interpreted.
    #[serde(default)]
    #[allow(dead_code, reason = "documentation only")]
    pub description: Option<String>,
    /// The category that `--suite` filters on.
    pub category: Category,
    /// Tags that `--tag` matches, together with each test's own tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Features every test of the suite needs (names as in ADAPTER §8).
    #[serde(default)]
    pub requires: Vec<String>,
    /// The tests, run in document order.
    pub tests: Vec<TestCase>,
}

/// The `category` of a suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Writer-side behaviour.
    Producer,
    /// Reader-side behaviour.
    Consumer,
    /// Create/delete/close/headers, and the validation cases.
    Lifecycle,
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Category::Producer => "producer",
            Category::Consumer => "consumer",
            Category::Lifecycle => "lifecycle",
        })
    }
}

/// One test of a suite (CASE-FORMAT §3).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestCase {
    /// Test id.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Free text; parsed so the key is known, not interpreted.
    #[serde(default)]
    #[allow(dead_code, reason = "documentation only")]
    pub description: Option<String>,
    /// Tags for `--tag`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Features this test needs.
    #[serde(default)]
    pub requires: Vec<String>,
    /// A truthy value skips the test unconditionally.
    #[serde(default)]
    pub skip: Option<SkipMarker>,
    /// Preparation steps.
    #[serde(default)]
    pub setup: Vec<Operation>,
    /// The steps under test.
    pub operations: Vec<Operation>,
    /// Best-effort steps run after the test.
    #[serde(default)]
    pub cleanup: Vec<Operation>,
    /// Not a runner key: the Node runner ignores it (it is not `requires`),
    /// and mapping it would skip tests the authors run, because `json` is not
    /// a feature name (CASE-FORMAT §3). Accepted here so that it is a known
    /// key, and deliberately not acted on.
    #[serde(default)]
    #[allow(dead_code, reason = "deliberately ignored, see above")]
    pub required_features: Vec<String>,
}

/// The value of a test's `skip` key.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SkipMarker {
    /// `skip: true` / `skip: false`.
    Flag(bool),
    /// `skip: "reason"`; an empty string does not skip.
    Reason(String),
}

impl SkipMarker {
    /// The skip reason when the marker is truthy (JS truthiness), else `None`.
    pub fn reason(&self) -> Option<String> {
        match self {
            SkipMarker::Flag(true) => Some("skip: true".to_owned()),
            SkipMarker::Flag(false) => None,
            SkipMarker::Reason(reason) if reason.is_empty() => None,
            SkipMarker::Reason(reason) => Some(reason.clone()),
        }
    }
}

/// An ordered map of header names to values. Order matters for
/// `server-append`, where a later entry overwrites an earlier one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A YAML mapping keeps document order; header values must be strings
        // (every case quotes them), so a bare number is rejected rather than
        // silently reformatted.
        let mapping = serde_yaml_ng::Mapping::deserialize(deserializer)?;
        let mut pairs = Vec::with_capacity(mapping.len());
        for (key, value) in mapping {
            match (key, value) {
                (YamlValue::String(name), YamlValue::String(value)) => pairs.push((name, value)),
                (key, value) => {
                    return Err(serde::de::Error::custom(format!(
                        "header entries must be string: string, got {key:?}: {value:?}"
                    )));
                }
            }
        }
        Ok(Headers(pairs))
    }
}

impl Headers {
    /// The headers as a JSON object for an adapter command.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .map(|(name, value)| (name.clone(), serde_json::Value::String(value.clone())))
                .collect(),
        )
    }
}

/// The `live` field of a read: absent, `false`, `true`, `"long-poll"` or
/// `"sse"` (ADAPTER §3 "read").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "LiveRepr")]
pub enum LiveMode {
    /// `live: false`: catch-up only.
    CatchUp,
    /// `live: true`: the client chooses.
    Auto,
    /// `live: long-poll`.
    LongPoll,
    /// `live: sse`.
    Sse,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LiveRepr {
    Flag(bool),
    Mode(String),
}

impl TryFrom<LiveRepr> for LiveMode {
    type Error = String;
    fn try_from(repr: LiveRepr) -> Result<Self, String> {
        match repr {
            LiveRepr::Flag(false) => Ok(LiveMode::CatchUp),
            LiveRepr::Flag(true) => Ok(LiveMode::Auto),
            LiveRepr::Mode(mode) if mode == "long-poll" => Ok(LiveMode::LongPoll),
            LiveRepr::Mode(mode) if mode == "sse" => Ok(LiveMode::Sse),
            LiveRepr::Mode(other) => Err(format!(
                "live must be false, true, \"long-poll\" or \"sse\", got {other:?}"
            )),
        }
    }
}

impl LiveMode {
    /// The value sent in the adapter command's `live` field.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            LiveMode::CatchUp => serde_json::Value::Bool(false),
            LiveMode::Auto => serde_json::Value::Bool(true),
            LiveMode::LongPoll => "long-poll".into(),
            LiveMode::Sse => "sse".into(),
        }
    }
}

/// One step of a test: an `action` plus its fields (CASE-FORMAT §7).
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Operation {
    /// Adapter `create`.
    Create(CreateOp),
    /// Adapter `connect`.
    Connect(PathOp),
    /// Adapter `append`.
    Append(AppendOp),
    /// Several adapter `append`s, combined by the runner.
    AppendBatch(AppendBatchOp),
    /// Adapter `idempotent-append`.
    IdempotentAppend(IdempotentAppendOp),
    /// Adapter `idempotent-append-batch`.
    IdempotentAppendBatch(IdempotentAppendBatchOp),
    /// Adapter `idempotent-close`.
    IdempotentClose(IdempotentCloseOp),
    /// Adapter `idempotent-detach`.
    IdempotentDetach(IdempotentDetachOp),
    /// Adapter `read`, foreground or background.
    Read(ReadOp),
    /// Adapter `head`.
    Head(PathOp),
    /// Adapter `delete`.
    Delete(PathOp),
    /// Adapter `close`.
    Close(CloseOp),
    /// Adapter `set-dynamic-header`.
    SetDynamicHeader(SetDynamicHeaderOp),
    /// Adapter `set-dynamic-param`.
    SetDynamicParam(SetDynamicParamOp),
    /// Adapter `clear-dynamic`.
    ClearDynamic(ClearDynamicOp),
    /// Adapter `validate`.
    Validate(ValidateOp),
    /// Runner-side POST to the server.
    ServerAppend(ServerAppendOp),
    /// Runner-side close POST to the server.
    ServerClose(ServerCloseOp),
    /// Runner-side fault injection on the server.
    InjectError(InjectErrorOp),
    /// Runner-side removal of all injected faults.
    ClearErrors(ClearErrorsOp),
    /// Sleep.
    Wait(WaitOp),
    /// Set a variable.
    Set(SetOp),
    /// Compare strings.
    Assert(AssertOp),
    /// Wait for a background read.
    Await(AwaitOp),
}

impl Operation {
    /// The YAML `action` name, for messages.
    pub fn action(&self) -> &'static str {
        match self {
            Operation::Create(_) => "create",
            Operation::Connect(_) => "connect",
            Operation::Append(_) => "append",
            Operation::AppendBatch(_) => "append-batch",
            Operation::IdempotentAppend(_) => "idempotent-append",
            Operation::IdempotentAppendBatch(_) => "idempotent-append-batch",
            Operation::IdempotentClose(_) => "idempotent-close",
            Operation::IdempotentDetach(_) => "idempotent-detach",
            Operation::Read(_) => "read",
            Operation::Head(_) => "head",
            Operation::Delete(_) => "delete",
            Operation::Close(_) => "close",
            Operation::SetDynamicHeader(_) => "set-dynamic-header",
            Operation::SetDynamicParam(_) => "set-dynamic-param",
            Operation::ClearDynamic(_) => "clear-dynamic",
            Operation::Validate(_) => "validate",
            Operation::ServerAppend(_) => "server-append",
            Operation::ServerClose(_) => "server-close",
            Operation::InjectError(_) => "inject-error",
            Operation::ClearErrors(_) => "clear-errors",
            Operation::Wait(_) => "wait",
            Operation::Set(_) => "set",
            Operation::Assert(_) => "assert",
            Operation::Await(_) => "await",
        }
    }

    /// The operation's `expect` mapping, if it can have one.
    pub fn expect(&self) -> Option<&Expect> {
        match self {
            Operation::Create(op) => op.expect.as_ref(),
            Operation::Connect(op) | Operation::Head(op) | Operation::Delete(op) => {
                op.expect.as_ref()
            }
            Operation::Append(op) => op.expect.as_ref(),
            Operation::AppendBatch(op) => op.expect.as_ref(),
            Operation::IdempotentAppend(op) => op.expect.as_ref(),
            Operation::IdempotentAppendBatch(op) => op.expect.as_ref(),
            Operation::IdempotentClose(op) => op.expect.as_ref(),
            Operation::IdempotentDetach(op) => op.expect.as_ref(),
            Operation::Read(op) => op.expect.as_ref(),
            Operation::Close(op) => op.expect.as_ref(),
            Operation::SetDynamicHeader(op) => op.expect.as_ref(),
            Operation::SetDynamicParam(op) => op.expect.as_ref(),
            Operation::ClearDynamic(op) => op.expect.as_ref(),
            Operation::Validate(op) => op.expect.as_ref(),
            Operation::ServerAppend(op) => op.expect.as_ref(),
            Operation::ServerClose(op) => op.expect.as_ref(),
            Operation::Await(op) => op.expect.as_ref(),
            Operation::InjectError(_)
            | Operation::ClearErrors(_)
            | Operation::Wait(_)
            | Operation::Set(_)
            | Operation::Assert(_) => None,
        }
    }
}

/// `create`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateOp {
    /// Substituted; when absent or empty the runner generates
    /// `/test-stream-<uuid>`.
    #[serde(default)]
    pub path: Option<String>,
    /// Variable that receives the path (set before the command is sent).
    #[serde(default, rename = "as")]
    pub store_path_as: Option<String>,
    /// Stream content type.
    #[serde(default)]
    pub content_type: Option<String>,
    /// `Stream-TTL`.
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
    /// `Stream-Expires-At`.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: Option<Headers>,
    /// Create the stream already closed.
    #[serde(default)]
    pub closed: Option<bool>,
    /// Initial body (verbatim, not substituted).
    #[serde(default)]
    pub data: Option<String>,
    /// Expectations.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// Actions with only a path and headers: `connect`, `head`, `delete`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PathOp {
    /// Substituted stream path.
    pub path: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: Option<Headers>,
    /// Expectations.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// `append`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AppendOp {
    /// Substituted stream path.
    pub path: String,
    /// Text payload, substituted when non-empty.
    #[serde(default)]
    pub data: Option<String>,
    /// A YAML value sent as compact JSON text (`json: null` is present).
    #[serde(default, deserialize_with = "present_value")]
    pub json: Option<YamlValue>,
    /// Base64 payload; takes precedence over `json` and `data`.
    #[serde(default)]
    pub binary_data: Option<String>,
    /// `Stream-Seq`.
    #[serde(default)]
    pub seq: Option<i64>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: Option<Headers>,
    /// Expectations.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// `append-batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AppendBatchOp {
    /// Substituted stream path.
    pub path: String,
    /// One adapter `append` per item, in order (items are verbatim).
    pub items: Vec<AppendBatchItem>,
    /// Headers sent with every item.
    #[serde(default)]
    pub headers: Option<Headers>,
    /// Expectations (`allSucceed`, `succeedIndices`, `failIndices`, ...).
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// One item of an `append-batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AppendBatchItem {
    /// Text payload (verbatim).
    #[serde(default)]
    pub data: Option<String>,
    /// Base64 payload (verbatim).
    #[serde(default)]
    pub binary_data: Option<String>,
    /// `Stream-Seq`.
    #[serde(default)]
    pub seq: Option<i64>,
}

/// `idempotent-append`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdempotentAppendOp {
    /// Substituted stream path.
    pub path: String,
    /// Producer id.
    pub producer_id: String,
    /// Producer epoch (default 0).
    #[serde(default)]
    pub epoch: Option<i64>,
    /// Payload (substituted).
    pub data: String,
    /// Adopt the server's epoch + 1 on a stale-epoch 403.
    #[serde(default)]
    pub auto_claim: Option<bool>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: Option<Headers>,
    /// Expectations.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// `idempotent-append-batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdempotentAppendBatchOp {
    /// Substituted stream path.
    pub path: String,
    /// Producer id.
    pub producer_id: String,
    /// Producer epoch (default 0).
    #[serde(default)]
    pub epoch: Option<i64>,
    /// The messages; each `data` is substituted.
    pub items: Vec<IdempotentBatchItem>,
    /// Adopt the server's epoch + 1 on a stale-epoch 403.
    #[serde(default)]
    pub auto_claim: Option<bool>,
    /// Pipelining depth for the producer.
    #[serde(default)]
    pub max_in_flight: Option<u64>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: Option<Headers>,
    /// Expectations.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// One item of an `idempotent-append-batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotentBatchItem {
    /// Payload (substituted).
    pub data: String,
}

/// `idempotent-close`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdempotentCloseOp {
    /// Substituted stream path.
    pub path: String,
    /// Producer id.
    pub producer_id: String,
    /// Producer epoch (default 0).
    #[serde(default)]
    pub epoch: Option<i64>,
    /// Optional final message, substituted when non-empty.
    #[serde(default)]
    pub data: Option<String>,
    /// Adopt the server's epoch + 1 on a stale-epoch 403.
    #[serde(default)]
    pub auto_claim: Option<bool>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: Option<Headers>,
    /// Expectations.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// `idempotent-detach`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdempotentDetachOp {
    /// Substituted stream path.
    pub path: String,
    /// Producer id.
    pub producer_id: String,
    /// Producer epoch (default 0).
    #[serde(default)]
    pub epoch: Option<i64>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: Option<Headers>,
    /// Expectations.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// `read`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReadOp {
    /// Substituted stream path.
    pub path: String,
    /// Start offset, substituted when non-empty; empty means absent.
    #[serde(default)]
    pub offset: Option<String>,
    /// Live mode; absent is sent as absent.
    #[serde(default)]
    pub live: Option<LiveMode>,
    /// Adapter-side read duration limit.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Adapter-side chunk limit.
    #[serde(default)]
    pub max_chunks: Option<u64>,
    /// Stop at the first up-to-date delivery.
    #[serde(default)]
    pub wait_for_up_to_date: Option<bool>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: Option<Headers>,
    /// With a non-empty `as`: send the command and do not wait.
    #[serde(default)]
    pub background: Option<bool>,
    /// Name of the background read, for `await`.
    #[serde(default, rename = "as")]
    pub background_name: Option<String>,
    /// Expectations. For a background read they are checked at `await`
    /// (the Node runner never checks them).
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// `close`. The Node runner accepts and drops `headers` here; this runner
/// rejects the key instead, so a case cannot rely on headers that are never
/// sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CloseOp {
    /// Substituted stream path.
    pub path: String,
    /// Optional final message (verbatim).
    #[serde(default)]
    pub data: Option<String>,
    /// Content type of the final message.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Expectations.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// `set-dynamic-header`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SetDynamicHeaderOp {
    /// Header name.
    pub name: String,
    /// `counter`, `timestamp` or `token`.
    pub value_type: String,
    /// Token value.
    #[serde(default)]
    pub initial_value: Option<String>,
    /// Expectations.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// `set-dynamic-param`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SetDynamicParamOp {
    /// Query parameter name.
    pub name: String,
    /// `counter` or `timestamp`.
    pub value_type: String,
    /// Expectations.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// `clear-dynamic`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearDynamicOp {
    /// Expectations.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// `validate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateOp {
    /// The object to validate, passed verbatim (numbers normalised as JS
    /// would print them).
    pub target: YamlValue,
    /// Expectations.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// `server-append`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerAppendOp {
    /// Substituted stream path.
    pub path: String,
    /// Body (substituted).
    pub data: String,
    /// Extra request headers, applied after the content type.
    #[serde(default)]
    pub headers: Option<Headers>,
    /// `Producer-Id`.
    #[serde(default)]
    pub producer_id: Option<String>,
    /// `Producer-Epoch`.
    #[serde(default)]
    pub producer_epoch: Option<i64>,
    /// `Producer-Seq`.
    #[serde(default)]
    pub producer_seq: Option<i64>,
    /// Expectations.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// `server-close`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerCloseOp {
    /// Substituted stream path.
    pub path: String,
    /// Optional final message (verbatim).
    #[serde(default)]
    pub data: Option<String>,
    /// Content type, sent only together with non-empty `data`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: Option<Headers>,
    /// Expectations.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// `inject-error` (ADAPTER §7). The Node runner ignores an `expect` here;
/// this runner rejects the key because nothing could check it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InjectErrorOp {
    /// Substituted stream path the fault applies to.
    pub path: String,
    /// Status to answer with.
    #[serde(default)]
    pub status: Option<u16>,
    /// How many matching requests the fault fires for (default 1).
    #[serde(default)]
    pub count: Option<u64>,
    /// `Retry-After` seconds.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// Delay before answering.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Destroy the socket without a response.
    #[serde(default)]
    pub drop_connection: Option<bool>,
    /// Cut the body after this many bytes.
    #[serde(default)]
    pub truncate_body_bytes: Option<u64>,
    /// Chance that a matching request fires the fault.
    #[serde(default)]
    pub probability: Option<f64>,
    /// Restrict the fault to one HTTP method.
    #[serde(default)]
    pub method: Option<String>,
    /// Overwrite some body bytes.
    #[serde(default)]
    pub corrupt_body: Option<bool>,
    /// Random extra delay.
    #[serde(default)]
    pub jitter_ms: Option<u64>,
    /// An SSE event written before the real stream.
    #[serde(default)]
    pub inject_sse_event: Option<InjectedSseEvent>,
}

/// `inject-error.injectSseEvent`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InjectedSseEvent {
    /// SSE `event:` type.
    pub event_type: String,
    /// SSE `data:` payload.
    pub data: String,
}

/// `clear-errors`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearErrorsOp {}

/// `wait`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitOp {
    /// Milliseconds to sleep.
    pub ms: u64,
}

/// `set`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetOp {
    /// Variable name (verbatim).
    pub name: String,
    /// Value (substituted).
    pub value: String,
}

/// `assert`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AssertOp {
    /// `left == right`.
    #[serde(default)]
    pub equals: Option<ComparePair>,
    /// `left != right`.
    #[serde(default)]
    pub not_equals: Option<ComparePair>,
    /// `value` contains `substring`.
    #[serde(default)]
    pub contains: Option<ContainsCheck>,
    /// `value` matches `pattern` (unanchored search).
    #[serde(default)]
    pub matches: Option<MatchesCheck>,
    /// Message used instead of the default on failure.
    #[serde(default)]
    pub message: Option<String>,
}

/// Operands of `assert.equals` / `assert.notEquals` (both substituted).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComparePair {
    /// Left operand.
    pub left: String,
    /// Right operand.
    pub right: String,
}

/// Operands of `assert.contains` (both substituted).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainsCheck {
    /// Haystack.
    pub value: String,
    /// Needle.
    pub substring: String,
}

/// Operands of `assert.matches` (`value` substituted, `pattern` verbatim).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchesCheck {
    /// Text to search.
    pub value: String,
    /// Regular expression.
    pub pattern: String,
}

/// `await`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwaitOp {
    /// The background read's `as` name.
    #[serde(rename = "ref")]
    pub background_name: String,
    /// Expectations for the read's reply.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// An `expect` mapping. Every key of CASE-FORMAT §10 is a field here; any
/// other key is a load error, so no expectation is silently skipped.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    /// Result `status`; the field must be present.
    #[serde(default)]
    pub status: Option<u16>,
    /// Error result with this `errorCode`.
    #[serde(default)]
    pub error_code: Option<String>,
    /// Error result whose message contains each string (case-insensitive).
    #[serde(default)]
    pub message_contains: Option<Vec<String>>,
    /// Error result whose message contains this (case-sensitive).
    #[serde(default)]
    pub error_contains: Option<String>,
    /// `true`: success; `false`: failure.
    #[serde(default)]
    pub valid: Option<bool>,
    /// `true`: failure; `false`: success.
    #[serde(default)]
    pub error: Option<bool>,
    /// `success` equals this.
    #[serde(default)]
    pub success: Option<bool>,
    /// Joined read data equals this.
    #[serde(default)]
    pub data: Option<String>,
    /// Joined read data contains this.
    #[serde(default)]
    pub data_contains: Option<String>,
    /// Joined read data contains each of these.
    #[serde(default)]
    pub data_contains_all: Option<Vec<String>>,
    /// Chunk-by-chunk read data.
    #[serde(default)]
    pub data_exact: Option<Vec<String>>,
    /// Read `upToDate`.
    #[serde(default)]
    pub up_to_date: Option<bool>,
    /// Read or head `streamClosed`.
    #[serde(default)]
    pub stream_closed: Option<bool>,
    /// Close or idempotent-close `finalOffset`.
    #[serde(default)]
    pub final_offset: Option<String>,
    /// Exact number of read chunks.
    #[serde(default)]
    pub chunk_count: Option<usize>,
    /// At least this many read chunks.
    #[serde(default)]
    pub min_chunks: Option<usize>,
    /// At most this many read chunks.
    #[serde(default)]
    pub max_chunks: Option<usize>,
    /// Head `contentType` (exact).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Head offset present and non-empty.
    #[serde(default)]
    pub has_offset: Option<bool>,
    /// Each entry must be in the result's `headersSent`.
    #[serde(default)]
    pub headers_sent: Option<BTreeMap<String, String>>,
    /// Each entry must be in the result's `paramsSent`.
    #[serde(default)]
    pub params_sent: Option<BTreeMap<String, String>>,
    /// Append `duplicate`.
    #[serde(default)]
    pub duplicate: Option<bool>,
    /// Append `producerEpoch`.
    #[serde(default)]
    pub producer_epoch: Option<i64>,
    /// Append `producerSeq`.
    #[serde(default)]
    pub producer_seq: Option<i64>,
    /// Append `producerExpectedSeq`.
    #[serde(default)]
    pub producer_expected_seq: Option<i64>,
    /// Append `producerReceivedSeq`.
    #[serde(default)]
    pub producer_received_seq: Option<i64>,
    /// Every item of a batch succeeded (or, for other results, `success`).
    #[serde(default)]
    pub all_succeed: Option<bool>,
    /// These `append-batch` items succeeded.
    #[serde(default)]
    pub succeed_indices: Option<Vec<usize>>,
    /// These `append-batch` items failed.
    #[serde(default)]
    pub fail_indices: Option<Vec<usize>>,
    /// Capture the result's offset into this variable.
    #[serde(default)]
    pub store_offset_as: Option<String>,
    /// Capture the joined read data into this variable.
    #[serde(default)]
    pub store_data_as: Option<String>,
    /// Capture the whole result object into this variable.
    #[serde(default)]
    pub store_as: Option<String>,
}

/// Deserializes a present field (even an explicit `null`) as `Some`.
fn present_value<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<YamlValue>, D::Error> {
    YamlValue::deserialize(deserializer).map(Some)
}

/// A case file that was found, with its parse result.
#[derive(Debug)]
pub struct LoadedFile {
    /// Path relative to the cases directory, with `/` separators.
    pub relative_path: String,
    /// The suite, or why the file could not be used.
    pub suite: Result<Suite, String>,
}

/// Finds every case file under `root` in the Node runner's order.
pub fn discover(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    walk(root, &mut found)?;
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    // Byte-wise order of the entry name within each directory, as libuv's
    // scandir does; this puts `idempotent/` before `idempotent-json-...`.
    entries.sort_by(|a, b| {
        a.file_name()
            .as_encoded_bytes()
            .cmp(b.file_name().as_encoded_bytes())
    });
    for entry in entries {
        // `DirEntry::file_type` does not follow symlinks, so a symlink is
        // neither descended into nor loaded.
        let file_type = entry.file_type()?;
        let path = entry.path();
        if file_type.is_dir() {
            walk(&path, found)?;
        } else if file_type.is_file() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".yaml") || name.ends_with(".yml") {
                found.push(path);
            }
        }
    }
    Ok(())
}

/// Parses one case file.
pub fn parse_suite(text: &str) -> Result<Suite, String> {
    serde_yaml_ng::from_str::<Suite>(text).map_err(|error| error.to_string())
}

/// Discovers and parses every case file under `root`. A file that does not
/// parse is returned with its error so the run can report it as a failure.
pub fn load_all(root: &Path) -> std::io::Result<Vec<LoadedFile>> {
    let mut loaded = Vec::new();
    for path in discover(root)? {
        let relative_path = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .components()
            .map(|component| component.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let suite = match std::fs::read_to_string(&path) {
            Ok(text) => parse_suite(&text),
            Err(error) => Err(format!("cannot read: {error}")),
        };
        loaded.push(LoadedFile {
            relative_path,
            suite,
        });
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public_cases_dir() -> PathBuf {
        crate::default_cases_dir()
    }

    #[test]
    fn every_public_case_file_parses() {
        let root = public_cases_dir();
        if !root.is_dir() {
            eprintln!("skipping: no cases directory at {}", root.display());
            return;
        }
        let loaded = load_all(&root).expect("walk the cases directory");
        assert!(
            !loaded.is_empty(),
            "no case files found in {}",
            root.display()
        );
        let mut tests = 0;
        for file in &loaded {
            match &file.suite {
                Ok(suite) => tests += suite.tests.len(),
                Err(error) => panic!("{} does not parse: {error}", file.relative_path),
            }
        }
        assert!(tests > 100, "only {tests} tests parsed");
    }

    #[test]
    fn discovery_sorts_per_directory_by_name_bytes() {
        let root = public_cases_dir();
        if !root.is_dir() {
            eprintln!("skipping: no cases directory at {}", root.display());
            return;
        }
        let files = discover(&root).unwrap();
        let position = |suffix: &str| {
            files
                .iter()
                .position(|path| path.ends_with(suffix))
                .unwrap_or_else(|| panic!("{suffix} not found"))
        };
        assert!(
            position("producer/idempotent/autoclaim.yaml")
                < position("producer/idempotent-json-batching.yaml")
        );
        assert!(position("consumer/read-sse.yaml") < position("lifecycle/dynamic-headers.yaml"));
    }

    const MINIMAL: &str = "
id: s
name: S
category: consumer
tests:
  - id: t
    name: T
    operations:
      - action: read
        path: /x
        live: long-poll
        expect:
          data: hi
";

    #[test]
    fn minimal_suite_parses() {
        let suite = parse_suite(MINIMAL).unwrap();
        assert_eq!(suite.tests.len(), 1);
        let Operation::Read(read) = &suite.tests[0].operations[0] else {
            panic!("expected a read");
        };
        assert_eq!(read.live, Some(LiveMode::LongPoll));
        assert_eq!(read.expect.as_ref().unwrap().data.as_deref(), Some("hi"));
    }

    #[test]
    fn unknown_keys_are_rejected_at_every_level() {
        let cases = [
            (
                "suite",
                MINIMAL.replace("category: consumer", "category: consumer\nskip: true"),
            ),
            (
                "test",
                MINIMAL.replace("    name: T", "    name: T\n    timeout: 5"),
            ),
            (
                "operation",
                MINIMAL.replace("path: /x", "path: /x\n        bogus: 1"),
            ),
            (
                "expect",
                MINIMAL.replace("data: hi", "data: hi\n          dataEquals: hi"),
            ),
            ("action", MINIMAL.replace("action: read", "action: reed")),
        ];
        for (level, text) in cases {
            assert!(
                parse_suite(&text).is_err(),
                "unknown {level} key was accepted"
            );
        }
    }

    #[test]
    fn strings_stay_strings_and_json_null_is_present() {
        let text = "
id: s
name: S
category: producer
tests:
  - id: t
    name: T
    skip: \"\"
    operations:
      - action: append
        path: /x
        data: yes
        json: null
";
        let suite = parse_suite(text).unwrap();
        assert!(suite.tests[0].skip.as_ref().unwrap().reason().is_none());
        let Operation::Append(append) = &suite.tests[0].operations[0] else {
            panic!("expected an append");
        };
        // YAML 1.2: `yes` is a string, not a boolean.
        assert_eq!(append.data.as_deref(), Some("yes"));
        assert_eq!(append.json, Some(YamlValue::Null));
    }

    #[test]
    fn substituted_fields_must_be_strings() {
        let text = MINIMAL.replace("path: /x", "path: /x\n        offset: 0");
        assert!(parse_suite(&text).is_err());
    }

    #[test]
    fn header_values_must_be_strings() {
        let text = MINIMAL.replace("path: /x", "path: /x\n        headers:\n          X-N: 1");
        assert!(parse_suite(&text).is_err());
        let text = MINIMAL.replace(
            "path: /x",
            "path: /x\n        headers:\n          X-N: \"1\"",
        );
        let suite = parse_suite(&text).unwrap();
        let Operation::Read(read) = &suite.tests[0].operations[0] else {
            panic!("expected a read");
        };
        assert_eq!(
            read.headers.as_ref().unwrap().0,
            vec![("X-N".to_owned(), "1".to_owned())]
        );
    }
}
