//! One function per adapter command (ADAPTER.md §3), and the per-process
//! state they share.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use durable_streams_client::{
    AppendOptions, Client, CreateOptions, ErrorKind, Offset, Producer, ProducerBuilder,
    RetryPolicy, Stream,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::dynamic::{Dynamic, SentValues, ValueType};
use crate::errors::Failure;
use crate::read::{self, ReadPlan};

/// What every command handler returns: a success reply or a failure.
pub type Reply = Result<Value, Failure>;

/// Content type used when `create` gives none (reference adapters).
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Per-process state; reset by `init`.
#[derive(Debug, Default)]
pub struct State {
    client: Option<Client>,
    server_url: String,
    /// Content type per stream path (later commands do not carry it).
    content_types: HashMap<String, String>,
    dynamic: Dynamic,
    /// Producers that persist across commands, by (path, producerId, epoch)
    /// as the reference adapter keys them; a failed producer stays cached so
    /// that it keeps reporting its failure instead of silently restarting
    /// at seq 0 (which the server would take for duplicates).
    producers: HashMap<(String, String, u64), Producer>,
}

/// Deserialize a command's fields, or fail with `INVALID_ARGUMENT`.
fn fields<T: DeserializeOwned>(command: &Value) -> Result<T, Failure> {
    T::deserialize(command).map_err(|e| Failure::invalid_argument(format!("bad command: {e}")))
}

type Headers = Option<BTreeMap<String, String>>;

fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|base| base.trim().eq_ignore_ascii_case("application/json"))
}

/// A JSON number field as a whole, non-negative integer.
fn whole(value: &Value, name: &str) -> Result<u64, Failure> {
    if let Some(n) = value.as_u64() {
        return Ok(n);
    }
    match value.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 1.8e19 => Ok(f as u64),
        _ => Err(Failure::invalid_argument(format!(
            "{name} must be a non-negative integer, got {value}"
        ))),
    }
}

impl State {
    fn client(&self) -> Result<&Client, Failure> {
        self.client
            .as_ref()
            .ok_or_else(|| Failure::invalid_argument("no init command received yet"))
    }

    /// A handle for `path` with the cached content type and the command's
    /// static headers (no dynamic values).
    fn stream(&self, path: &str, headers: &Headers) -> Result<Stream, Failure> {
        let url = format!("{}{}", self.server_url, path);
        let mut stream = self
            .client()?
            .stream(&url)
            .map_err(|e| Failure::from_client(&e, path, false))?;
        if let Some(ct) = self.content_types.get(path) {
            stream = stream.with_content_type(ct.clone());
        }
        Ok(with_headers(stream, headers))
    }

    /// Like [`State::stream`], with the dynamic headers and params installed
    /// first so that the command's own headers take precedence.
    fn dynamic_stream(&self, path: &str, headers: &Headers) -> Result<Stream, Failure> {
        let base = self.stream(path, &None)?;
        Ok(with_headers(self.dynamic.apply(base), headers))
    }

    /// A plain handle for benchmarks (cached content type, no dynamic values).
    pub fn bench_stream(&self, path: &str) -> Result<Stream, Failure> {
        self.stream(path, &None)
    }

    /// Cache a stream's content type.
    pub fn remember_content_type(&mut self, path: &str, content_type: &str) {
        self.content_types
            .insert(path.to_owned(), content_type.to_owned());
    }

    fn json_stream(&self, path: &str) -> bool {
        self.content_types.get(path).is_some_and(|ct| is_json(ct))
    }
}

fn with_headers(mut stream: Stream, headers: &Headers) -> Stream {
    for (name, value) in headers.iter().flatten() {
        stream = stream.with_header(name.clone(), value.clone());
    }
    stream
}

/// Add `headersSent` / `paramsSent` when non-empty.
fn add_sent(reply: &mut Value, sent: SentValues) {
    if !sent.headers.is_empty() {
        reply["headersSent"] = json!(sent.headers);
    }
    if !sent.params.is_empty() {
        reply["paramsSent"] = json!(sent.params);
    }
}

/// `init`: reset all state and advertise the features.
pub fn init(state: &mut State, command: &Value) -> Reply {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Init {
        server_url: String,
    }
    let cmd: Init = fields(command)?;
    // Retries must finish well inside the runner's 30 s command timeout.
    let client = Client::builder()
        .user_agent(concat!(
            "durable-streams-conformance-adapter/",
            env!("CARGO_PKG_VERSION")
        ))
        .request_timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| Failure::from_client(&e, "", false))?;
    *state = State {
        client: Some(client),
        server_url: cmd.server_url.trim_end_matches('/').to_owned(),
        content_types: HashMap::new(),
        dynamic: Dynamic::default(),
        producers: HashMap::new(),
    };
    Ok(json!({
        "type": "init",
        "success": true,
        "clientName": "durable-streams-client (Rust)",
        "clientVersion": env!("CARGO_PKG_VERSION"),
        "features": {
            "batching": true,
            "sse": true,
            "longPoll": true,
            "auto": true,
            "streaming": true,
            "dynamicHeaders": true,
            "retryOptions": true,
            "batchItems": true,
            "strictZeroValidation": true,
        },
    }))
}

/// `create` (PUT).
pub async fn create(state: &mut State, command: &Value) -> Reply {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Create {
        path: String,
        content_type: Option<String>,
        ttl_seconds: Option<Value>,
        expires_at: Option<String>,
        headers: Headers,
        closed: Option<bool>,
        data: Option<String>,
    }
    let cmd: Create = fields(command)?;
    let content_type = cmd
        .content_type
        .clone()
        .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned());
    let mut options = CreateOptions::new().content_type(content_type.clone());
    if let Some(ttl) = &cmd.ttl_seconds {
        options = options.ttl(Duration::from_secs(whole(ttl, "ttlSeconds")?));
    }
    if let Some(at) = &cmd.expires_at {
        let at = humantime::parse_rfc3339_weak(at).map_err(|e| {
            Failure::invalid_argument(format!("expiresAt {at:?} is not RFC 3339: {e}"))
        })?;
        options = options.expires_at(at);
    }
    if let Some(closed) = cmd.closed {
        options = options.closed(closed);
    }
    if let Some(data) = cmd.data {
        options = options.body(Bytes::from(data));
    }
    let stream = state.stream(&cmd.path, &cmd.headers)?;
    let result = stream
        .create_with(options)
        .await
        .map_err(|e| Failure::from_client(&e, &cmd.path, false))?;
    let learned = result.content_type.clone().unwrap_or(content_type);
    state.content_types.insert(cmd.path.clone(), learned);
    let mut reply = json!({
        "type": "create",
        "success": true,
        "status": if result.created { 201 } else { 200 },
    });
    if let Some(offset) = &result.next_offset {
        reply["offset"] = json!(offset.as_str());
    }
    Ok(reply)
}

/// `connect`: attach to an existing stream (HEAD) and cache its content type.
pub async fn connect(state: &mut State, command: &Value) -> Reply {
    #[derive(Deserialize)]
    struct Connect {
        path: String,
        headers: Headers,
    }
    let cmd: Connect = fields(command)?;
    let info = state
        .stream(&cmd.path, &cmd.headers)?
        .head()
        .await
        .map_err(|e| Failure::from_client(&e, &cmd.path, false))?;
    if let Some(ct) = &info.content_type {
        state.content_types.insert(cmd.path.clone(), ct.clone());
    }
    Ok(json!({
        "type": "connect",
        "success": true,
        "status": 200,
        "offset": info.next_offset.as_str(),
    }))
}

/// `append` (POST).
pub async fn append(state: &mut State, command: &Value) -> Reply {
    #[derive(Deserialize)]
    struct Append {
        path: String,
        data: String,
        #[serde(default)]
        binary: bool,
        seq: Option<Value>,
        headers: Headers,
    }
    let cmd: Append = fields(command)?;
    let body = if cmd.binary {
        base64::engine::general_purpose::STANDARD
            .decode(cmd.data.as_bytes())
            .map_err(|e| Failure::invalid_argument(format!("data is not base64: {e}")))?
    } else if state.json_stream(&cmd.path) {
        json_single_message(cmd.data)
    } else {
        cmd.data.into_bytes()
    };
    let mut options = AppendOptions::new();
    if let Some(content_type) = state.content_types.get(&cmd.path) {
        options = options.content_type(content_type.clone());
    }
    if let Some(seq) = &cmd.seq {
        options = options.seq(match seq {
            Value::String(s) => s.clone(),
            other => whole(other, "seq")?.to_string(),
        });
    }
    let stream = state.dynamic_stream(&cmd.path, &cmd.headers)?;
    let result = stream.append_with(body, options).await;
    let sent = state.dynamic.take_sent();
    let result = result.map_err(|e| Failure::from_client(&e, &cmd.path, false))?;
    let mut reply = json!({
        "type": "append",
        "success": true,
        "status": 200,
        "offset": result.next_offset.as_ref().map(|o| o.as_str()),
    });
    add_sent(&mut reply, sent);
    Ok(reply)
}

/// The body appending `data` (JSON text) to a JSON stream as exactly one
/// message, as the reference client does: `[1,2]` becomes `[[1,2]]`, not
/// two messages. Text that is not one JSON value (e.g. the empty string of
/// `append-empty`) is sent as is, for the server to reject.
fn json_single_message(data: String) -> Vec<u8> {
    if serde_json::from_str::<&serde_json::value::RawValue>(&data).is_err() {
        return data.into_bytes();
    }
    let mut body = Vec::with_capacity(data.len() + 2);
    body.push(b'[');
    body.extend_from_slice(data.as_bytes());
    body.push(b']');
    body
}

/// `read` (GET, every live mode).
pub async fn read(state: &mut State, command: &Value) -> Reply {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Read {
        path: String,
        offset: Option<String>,
        live: Option<Value>,
        timeout_ms: Option<Value>,
        max_chunks: Option<Value>,
        wait_for_up_to_date: Option<bool>,
        headers: Headers,
    }
    let cmd: Read = fields(command)?;
    let live = read::live_mode(cmd.live.as_ref()).map_err(Failure::invalid_argument)?;
    let start = cmd.offset.clone().unwrap_or_else(|| "-1".to_owned());
    let offset =
        Offset::parse(&start).map_err(|e| Failure::from_client(&e.into(), &cmd.path, true))?;
    let timeout_ms = cmd
        .timeout_ms
        .as_ref()
        .map(|v| whole(v, "timeoutMs"))
        .transpose()?;
    let max_chunks = cmd
        .max_chunks
        .as_ref()
        .map(|v| whole(v, "maxChunks"))
        .transpose()?;
    let plan = ReadPlan::new(
        live,
        start,
        timeout_ms,
        max_chunks,
        cmd.wait_for_up_to_date.unwrap_or(false),
    );
    let stream = state.dynamic_stream(&cmd.path, &cmd.headers)?;
    let json = state.json_stream(&cmd.path);
    let outcome = read::run(stream.read().offset(offset), json, &plan).await;
    let sent = state.dynamic.take_sent();
    let outcome = outcome.map_err(|e| Failure::from_client(&e, &cmd.path, true))?;
    if !state.content_types.contains_key(&cmd.path)
        && let Some(ct) = stream.content_type()
    {
        state.content_types.insert(cmd.path.clone(), ct);
    }
    let mut reply = json!({
        "type": "read",
        "success": true,
        "status": outcome.status,
        "chunks": outcome.chunks,
        "offset": outcome.offset,
        "upToDate": outcome.up_to_date,
        "streamClosed": outcome.stream_closed,
    });
    add_sent(&mut reply, sent);
    Ok(reply)
}

/// `head` (HEAD).
pub async fn head(state: &mut State, command: &Value) -> Reply {
    #[derive(Deserialize)]
    struct Head {
        path: String,
        headers: Headers,
    }
    let cmd: Head = fields(command)?;
    let info = state
        .stream(&cmd.path, &cmd.headers)?
        .head()
        .await
        .map_err(|e| Failure::from_client(&e, &cmd.path, false))?;
    let mut reply = json!({
        "type": "head",
        "success": true,
        "status": 200,
        "offset": info.next_offset.as_str(),
        "streamClosed": info.closed,
    });
    if let Some(ct) = &info.content_type {
        reply["contentType"] = json!(ct);
        state.content_types.insert(cmd.path.clone(), ct.clone());
    }
    if let Some(ttl) = info.ttl {
        reply["ttlSeconds"] = json!(ttl.as_secs());
    }
    if let Some(at) = &info.expires_at_raw {
        reply["expiresAt"] = json!(at);
    }
    Ok(reply)
}

/// `delete` (DELETE). Reports 200 for the server's 204 (ADAPTER §3).
pub async fn delete(state: &mut State, command: &Value) -> Reply {
    #[derive(Deserialize)]
    struct Delete {
        path: String,
        headers: Headers,
    }
    let cmd: Delete = fields(command)?;
    let result = state.stream(&cmd.path, &cmd.headers)?.delete().await;
    state.content_types.remove(&cmd.path);
    result.map_err(|e| Failure::from_client(&e, &cmd.path, false))?;
    Ok(json!({ "type": "delete", "success": true, "status": 200 }))
}

/// `close`: POST with `Stream-Closed: true`, with an optional final message.
pub async fn close(state: &mut State, command: &Value) -> Reply {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Close {
        path: String,
        data: Option<String>,
        content_type: Option<String>,
    }
    let cmd: Close = fields(command)?;
    let mut stream = state.stream(&cmd.path, &None)?;
    if let Some(ct) = &cmd.content_type {
        stream = stream.with_content_type(ct.clone());
    }
    let result = match cmd.data {
        Some(data) if !data.is_empty() => stream.close_with(Bytes::from(data)).await,
        _ => stream.close().await,
    }
    .map_err(|e| Failure::from_client(&e, &cmd.path, false))?;
    let mut reply = json!({ "type": "close", "success": true, "status": 200 });
    if let Some(offset) = &result.final_offset {
        reply["finalOffset"] = json!(offset.as_str());
    }
    Ok(reply)
}

/// `set-dynamic-header`.
pub fn set_dynamic_header(state: &mut State, command: &Value) -> Reply {
    let (name, kind) = dynamic_fields(command)?;
    state.dynamic.set_header(&name, kind);
    Ok(json!({ "type": "set-dynamic-header", "success": true }))
}

/// `set-dynamic-param`.
pub fn set_dynamic_param(state: &mut State, command: &Value) -> Reply {
    let (name, kind) = dynamic_fields(command)?;
    state.dynamic.set_param(&name, kind);
    Ok(json!({ "type": "set-dynamic-param", "success": true }))
}

fn dynamic_fields(command: &Value) -> Result<(String, ValueType), Failure> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct SetDynamic {
        name: String,
        value_type: String,
        initial_value: Option<String>,
    }
    let cmd: SetDynamic = fields(command)?;
    let kind =
        ValueType::parse(&cmd.value_type, cmd.initial_value.as_deref()).ok_or_else(|| {
            Failure::invalid_argument(format!("unknown valueType {:?}", cmd.value_type))
        })?;
    Ok((cmd.name, kind))
}

/// `clear-dynamic`.
pub fn clear_dynamic(state: &mut State) -> Reply {
    state.dynamic.clear();
    Ok(json!({ "type": "clear-dynamic", "success": true }))
}

/// `validate`: option validation by the library, no network request.
pub fn validate(command: &Value) -> Reply {
    let target = command
        .get("target")
        .ok_or_else(|| Failure::invalid_argument("validate needs a target"))?;
    match target.get("target").and_then(Value::as_str) {
        Some("retry-options") => validate_retry_options(target)?,
        Some("idempotent-producer") => validate_producer_options(target)?,
        other => {
            return Err(Failure::not_supported(format!(
                "validate: unknown target {other:?}"
            )));
        }
    }
    Ok(json!({ "type": "validate", "success": true }))
}

/// Configure a [`ProducerBuilder`] from the options and let the library
/// validate it. Negative numbers cannot be represented and are rejected
/// while converting; zero sizes are rejected by the library.
fn validate_producer_options(target: &Value) -> Result<(), Failure> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ProducerOptions {
        producer_id: Option<String>,
        epoch: Option<f64>,
        max_batch_bytes: Option<f64>,
        max_batch_items: Option<f64>,
    }
    let opts: ProducerOptions = fields(target)?;
    let invalid = |name: &str, why: String| Failure::invalid_argument(format!("{name}: {why}"));
    let count = |name: &str, v: f64| {
        if v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_991.0 {
            Ok(v as u64)
        } else {
            Err(invalid(
                name,
                format!("must be a non-negative integer, got {v}"),
            ))
        }
    };
    let client = Client::new();
    let stream = client
        .stream("http://127.0.0.1/validate")
        .map_err(|e| Failure::from_client(&e, "", false))?
        .with_content_type(DEFAULT_CONTENT_TYPE);
    let mut builder = Producer::builder(
        &stream,
        opts.producer_id.unwrap_or_else(|| "validate".to_owned()),
    );
    if let Some(epoch) = opts.epoch {
        builder = builder.epoch(count("epoch", epoch)?);
    }
    if let Some(bytes) = opts.max_batch_bytes {
        builder = builder.max_batch_bytes(count("maxBatchBytes", bytes)? as usize);
    }
    if let Some(items) = opts.max_batch_items {
        builder = builder.max_batch_items(count("maxBatchItems", items)? as usize);
    }
    builder.validate().map_err(|e| {
        let name = match e.kind() {
            ErrorKind::InvalidArgument { field } => match *field {
                "producer_id" => "producerId",
                "max_batch_bytes" => "maxBatchBytes",
                "max_batch_items" => "maxBatchItems",
                other => other,
            },
            _ => "idempotentProducer",
        };
        invalid(name, e.to_string())
    })
}

/// Build a [`RetryPolicy`] from the options and let the library validate it.
/// Values a `RetryPolicy` cannot represent (negative counts or durations) are
/// rejected while converting. Library field names are reported in the
/// protocol's camelCase.
fn validate_retry_options(target: &Value) -> Result<(), Failure> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct RetryOptions {
        max_retries: Option<f64>,
        initial_delay_ms: Option<f64>,
        max_delay_ms: Option<f64>,
        multiplier: Option<f64>,
    }
    let opts: RetryOptions = fields(target)?;
    let invalid = |name: &str, why: String| Failure::invalid_argument(format!("{name}: {why}"));
    let mut policy = RetryPolicy::default();
    if let Some(n) = opts.max_retries {
        if !(n >= 0.0 && n.fract() == 0.0 && n <= f64::from(u32::MAX)) {
            return Err(invalid(
                "maxRetries",
                format!("must be a non-negative integer, got {n}"),
            ));
        }
        policy = policy.max_retries(n as u32);
    }
    let millis = |name: &str, ms: f64| {
        Duration::try_from_secs_f64(ms / 1000.0)
            .map_err(|_| invalid(name, format!("must be a non-negative duration, got {ms}")))
    };
    if let Some(ms) = opts.initial_delay_ms {
        policy = policy.initial_delay(millis("initialDelayMs", ms)?);
    }
    if let Some(ms) = opts.max_delay_ms {
        policy = policy.max_delay(millis("maxDelayMs", ms)?);
    }
    if let Some(m) = opts.multiplier {
        policy = policy.multiplier(m);
    }
    policy.validate().map_err(|e| {
        let name = match e.kind() {
            ErrorKind::InvalidArgument { field } => match *field {
                "max_retries" => "maxRetries",
                "initial_delay" => "initialDelayMs",
                "max_delay" => "maxDelayMs",
                other => other,
            },
            _ => "retryOptions",
        };
        invalid(name, e.to_string())
    })
}

/// Fields shared by the idempotent-* commands.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProducerFields {
    path: String,
    producer_id: String,
    #[serde(default)]
    epoch: Option<Value>,
    #[serde(default)]
    auto_claim: bool,
    headers: Headers,
}

impl ProducerFields {
    fn epoch(&self) -> Result<u64, Failure> {
        match &self.epoch {
            None | Some(Value::Null) => Ok(0),
            Some(v) => whole(v, "epoch"),
        }
    }
}

impl State {
    /// A producer builder for the command's stream, with the dynamic and
    /// static headers installed and the content type known (a HEAD only
    /// when this adapter never saw the stream's content type).
    async fn producer_builder(&self, f: &ProducerFields) -> Result<ProducerBuilder, Failure> {
        let stream = self.dynamic_stream(&f.path, &f.headers)?;
        if stream.content_type().is_none() {
            stream
                .head()
                .await
                .map_err(|e| Failure::from_client(&e, &f.path, false))?;
        }
        // The reference client takes every 204 for a deduplicated success;
        // the conformance cases re-send identical batches from a new
        // instance with the same id and epoch and expect exactly that.
        Ok(Producer::builder(&stream, f.producer_id.clone())
            .epoch(f.epoch()?)
            .auto_claim(f.auto_claim)
            .detect_collisions(false))
    }

    async fn cached_producer(&mut self, f: &ProducerFields) -> Result<&Producer, Failure> {
        let key = (f.path.clone(), f.producer_id.clone(), f.epoch()?);
        if !self.producers.contains_key(&key) {
            let producer = self
                .producer_builder(f)
                .await?
                .build()
                .map_err(|e| Failure::from_client(&e, &f.path, false))?;
            self.producers.insert(key.clone(), producer);
        }
        Ok(&self.producers[&key])
    }
}

/// `idempotent-append`: append through the cached producer and wait for the
/// acknowledgement.
pub async fn idempotent_append(state: &mut State, command: &Value) -> Reply {
    let f: ProducerFields = fields(command)?;
    let data: String = command
        .get("data")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Failure::invalid_argument("idempotent-append needs data"))?;
    let path = f.path.clone();
    let producer = state.cached_producer(&f).await?;
    let failed = |e: durable_streams_client::Error| Failure::from_client(&e, &path, false);
    let receipt = producer
        .send(data)
        .await
        .map_err(failed)?
        .await
        .map_err(failed)?;
    let mut reply = json!({
        "type": "idempotent-append",
        "success": true,
        "status": 200,
        "duplicate": receipt.duplicate,
        "producerSeq": receipt.seq,
    });
    if let Some(offset) = &receipt.offset {
        reply["offset"] = json!(offset.as_str());
    }
    Ok(reply)
}

/// `idempotent-append-batch`: a fresh producer appends every item, flushes
/// and detaches. With `maxInFlight` > 1 every item is its own request (as
/// the reference adapter does), so pipelining and gap resends get exercised.
pub async fn idempotent_append_batch(state: &mut State, command: &Value) -> Reply {
    let f: ProducerFields = fields(command)?;
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Batch {
        items: Vec<Value>,
        max_in_flight: Option<Value>,
    }
    let batch: Batch = fields(command)?;
    let max_in_flight = match &batch.max_in_flight {
        Some(v) => whole(v, "maxInFlight")?,
        None => 1,
    };
    let items = batch
        .items
        .iter()
        .map(|item| match item {
            Value::String(s) => Ok(s.clone()),
            Value::Object(o) => o
                .get("data")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| Failure::invalid_argument("a batch item needs string data")),
            _ => Err(Failure::invalid_argument("batch items must be strings")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut builder = state.producer_builder(&f).await?;
    builder = if max_in_flight > 1 {
        builder
            .max_in_flight(max_in_flight as usize)
            .linger(Duration::ZERO)
            .max_batch_bytes(1)
    } else {
        builder
            .max_in_flight(1)
            .linger(Duration::from_secs(1))
            .max_batch_bytes(1 << 20)
    };
    let producer = builder
        .build()
        .map_err(|e| Failure::from_client(&e, &f.path, false))?;
    let failed = |e: durable_streams_client::Error| Failure::from_client(&e, &f.path, false);
    for item in items {
        drop(producer.send(item).await.map_err(failed)?);
    }
    producer.flush().await.map_err(failed)?;
    let seq = producer.next_seq();
    producer.close().await.map_err(failed)?;
    Ok(json!({
        "type": "idempotent-append-batch",
        "success": true,
        "status": 200,
        "producerSeq": seq.saturating_sub(1),
    }))
}

/// `idempotent-close`: close the stream through the (cached) producer, with
/// the producer headers so that repeating it is deduplicated.
pub async fn idempotent_close(state: &mut State, command: &Value) -> Reply {
    let f: ProducerFields = fields(command)?;
    let data = command
        .get("data")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .map(|d| Bytes::from(d.to_owned()));
    let path = f.path.clone();
    let producer = state.cached_producer(&f).await?;
    let result = producer
        .close_stream(data)
        .await
        .map_err(|e| Failure::from_client(&e, &path, false))?;
    let mut reply = json!({ "type": "idempotent-close", "success": true, "status": 200 });
    if let Some(offset) = &result.final_offset {
        reply["finalOffset"] = json!(offset.as_str());
    }
    Ok(reply)
}

/// `idempotent-detach`: stop the cached producer without closing the stream.
pub async fn idempotent_detach(state: &mut State, command: &Value) -> Reply {
    let f: ProducerFields = fields(command)?;
    let key = (f.path.clone(), f.producer_id.clone(), f.epoch()?);
    if let Some(producer) = state.producers.remove(&key) {
        producer
            .close()
            .await
            .map_err(|e| Failure::from_client(&e, &f.path, false))?;
    }
    Ok(json!({ "type": "idempotent-detach", "success": true, "status": 200 }))
}

/// `shutdown`.
pub fn shutdown() -> Reply {
    Ok(json!({ "type": "shutdown", "success": true }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_append_is_one_message() {
        use super::json_single_message;
        assert_eq!(json_single_message("[1,2]".into()), b"[[1,2]]");
        assert_eq!(json_single_message(" {\"a\":1} ".into()), b"[ {\"a\":1} ]");
        assert_eq!(json_single_message("\"s\"".into()), b"[\"s\"]");
        assert_eq!(json_single_message(String::new()), b"");
        assert_eq!(json_single_message("{".into()), b"{");
    }

    use super::*;

    fn validate_error(target: Value) -> Failure {
        validate(&json!({ "type": "validate", "target": target })).unwrap_err()
    }

    #[test]
    fn retry_option_validation_names_the_parameter() {
        let f = validate_error(json!({"target": "retry-options", "maxRetries": -1}));
        assert_eq!(f.code, "INVALID_ARGUMENT");
        assert!(f.message.contains("maxRetries"), "{}", f.message);
        let f = validate_error(json!({"target": "retry-options", "multiplier": 0.5}));
        assert!(f.message.contains("multiplier"), "{}", f.message);
        let f = validate_error(
            json!({"target": "retry-options", "initialDelayMs": 1000, "maxDelayMs": 10}),
        );
        assert!(f.message.contains("maxDelayMs"), "{}", f.message);
        let f = validate_error(json!({"target": "retry-options", "initialDelayMs": -5}));
        assert!(f.message.contains("initialDelayMs"), "{}", f.message);
        assert!(
            validate(
                &json!({"type": "validate", "target": {"target": "retry-options", "maxRetries": 3}})
            )
            .is_ok()
        );
        assert_eq!(
            validate_error(json!({"target": "nope"})).code,
            "NOT_SUPPORTED"
        );
    }
}
