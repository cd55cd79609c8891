//! The `read` command (ADAPTER.md §3 "read"): catch-up, long-poll, SSE and
//! auto reads with the reference adapters' stopping rules.

use std::time::Duration;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use durable_streams_client::{Error, LiveMode, Offset, ReadBuilder};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::time::Instant;

/// Default `timeoutMs` for live reads.
const DEFAULT_TIMEOUT_MS: u64 = 5000;
/// Default `maxChunks` for live reads.
const DEFAULT_MAX_CHUNKS: u64 = 100;

/// The `live` field: absent/`false`, `true` (auto), `"long-poll"`, `"sse"`.
pub fn live_mode(live: Option<&Value>) -> Result<LiveMode, String> {
    match live {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(LiveMode::Off),
        Some(Value::Bool(true)) => Ok(LiveMode::Auto),
        Some(Value::String(s)) if s == "long-poll" => Ok(LiveMode::LongPoll),
        Some(Value::String(s)) if s == "sse" => Ok(LiveMode::Sse),
        Some(Value::String(s)) if s == "auto" => Ok(LiveMode::Auto),
        Some(other) => Err(format!("unknown live mode {other}")),
    }
}

/// What one delivery carried.
enum Payload {
    Json(Vec<Box<RawValue>>),
    Bytes(Bytes),
}

impl Payload {
    fn is_empty(&self) -> bool {
        match self {
            Payload::Json(items) => items.is_empty(),
            Payload::Bytes(b) => b.is_empty(),
        }
    }
}

/// One item of the library's read stream, shape-independent.
struct Delivery {
    payload: Payload,
    offset: Offset,
    up_to_date: bool,
    closed: bool,
    /// HTTP status of the response it came from.
    status: u16,
}

/// Stopping rules for one read.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    /// How the read continues after catching up.
    pub live: LiveMode,
    /// The requested start offset as sent (for the timeout-before-anything reply).
    pub start: String,
    /// Give up (successfully) after this long; `None` = no limit.
    pub timeout: Option<Duration>,
    /// Stop after this many non-empty chunks.
    pub max_chunks: u64,
    /// Stop at the first up-to-date delivery.
    pub wait_for_up_to_date: bool,
}

impl ReadPlan {
    /// The plan for a command's fields (defaults per ADAPTER §3).
    pub fn new(
        live: LiveMode,
        start: String,
        timeout_ms: Option<u64>,
        max_chunks: Option<u64>,
        wait_for_up_to_date: bool,
    ) -> ReadPlan {
        let timeout = match (live, timeout_ms) {
            (_, Some(ms)) => Some(Duration::from_millis(ms)),
            (LiveMode::Off, None) => None,
            (_, None) => Some(Duration::from_millis(DEFAULT_TIMEOUT_MS)),
        };
        ReadPlan {
            live,
            start,
            timeout,
            max_chunks: max_chunks.unwrap_or(DEFAULT_MAX_CHUNKS),
            wait_for_up_to_date,
        }
    }
}

/// The successful part of a read reply (without dynamic values).
#[derive(Debug)]
pub struct ReadOutcome {
    /// `chunks[]` objects.
    pub chunks: Vec<Value>,
    /// Where to resume.
    pub offset: String,
    /// Up to date (or timed out).
    pub up_to_date: bool,
    /// The server reported the stream closed.
    pub stream_closed: bool,
    /// The status of the last response that delivered something (200 when
    /// nothing was delivered before a timeout).
    pub status: u16,
    /// Messages (JSON) or bytes delivered, for benchmarks.
    pub messages: u64,
    /// Bytes of delivered data (re-serialised JSON for JSON streams).
    pub bytes: u64,
}

/// Run a read. `json` selects message mode (the stream's content type).
pub async fn run(builder: ReadBuilder, json: bool, plan: &ReadPlan) -> Result<ReadOutcome, Error> {
    let builder = builder.live(plan.live);
    let mut deliveries: BoxStream<'static, Result<Delivery, Error>> = if json {
        builder
            .json::<Box<RawValue>>()
            .map(|batch| {
                batch.map(|b| Delivery {
                    payload: Payload::Json(b.items),
                    offset: b.offset,
                    up_to_date: b.up_to_date,
                    closed: b.closed,
                    status: b.status,
                })
            })
            .boxed()
    } else {
        builder
            .bytes()
            .map(|chunk| {
                chunk.map(|c| Delivery {
                    payload: Payload::Bytes(c.data),
                    offset: c.offset,
                    up_to_date: c.up_to_date,
                    closed: c.closed,
                    status: c.status,
                })
            })
            .boxed()
    };
    let deadline = plan.timeout.map(|t| Instant::now() + t);
    let catch_up = plan.live == LiveMode::Off;

    let mut out = ReadOutcome {
        chunks: Vec::new(),
        offset: plan.start.clone(),
        up_to_date: false,
        stream_closed: false,
        status: 200,
        messages: 0,
        bytes: 0,
    };
    // Catch-up reads return everything as one chunk (TS reference adapter).
    let mut gathered_json: Vec<Box<RawValue>> = Vec::new();
    let mut gathered_bytes = BytesMut::new();
    let mut gathered_any = false;

    loop {
        let next = match deadline {
            Some(at) => match tokio::time::timeout_at(at, deliveries.next()).await {
                Ok(next) => next,
                Err(_elapsed) => {
                    // Timing out counts as caught up (ADAPTER §3, rule c).
                    out.up_to_date = true;
                    break;
                }
            },
            None => deliveries.next().await,
        };
        let Some(delivery) = next else { break };
        let delivery = delivery?;
        out.offset = delivery.offset.as_str().to_owned();
        out.up_to_date = delivery.up_to_date;
        out.stream_closed |= delivery.closed;
        out.status = delivery.status;
        if !delivery.payload.is_empty() {
            match delivery.payload {
                Payload::Json(items) if catch_up => {
                    gathered_json.extend(items);
                    gathered_any = true;
                }
                Payload::Bytes(data) if catch_up => {
                    gathered_bytes.extend_from_slice(&data);
                    gathered_any = true;
                }
                payload => {
                    let (chunk, messages, bytes) = render(payload, Some(&out.offset));
                    out.messages += messages;
                    out.bytes += bytes;
                    out.chunks.push(chunk);
                }
            }
            if !catch_up && out.chunks.len() as u64 >= plan.max_chunks {
                break;
            }
        }
        if plan.wait_for_up_to_date && delivery.up_to_date {
            break;
        }
    }
    if gathered_any {
        let payload = if json {
            Payload::Json(gathered_json)
        } else {
            Payload::Bytes(gathered_bytes.freeze())
        };
        let (chunk, messages, bytes) = render(payload, Some(&out.offset));
        out.messages += messages;
        out.bytes += bytes;
        out.chunks.push(chunk);
    }
    Ok(out)
}

/// One `chunks[]` entry; also returns (messages, bytes) for metrics.
fn render(payload: Payload, offset: Option<&str>) -> (Value, u64, u64) {
    let (mut chunk, messages, bytes) = match payload {
        Payload::Json(items) => {
            let data = json_array(&items);
            let len = data.len() as u64;
            (json!({ "data": data }), items.len() as u64, len)
        }
        Payload::Bytes(data) => {
            let len = data.len() as u64;
            match std::str::from_utf8(&data) {
                Ok(text) => (json!({ "data": text }), 1, len),
                Err(_) => (
                    json!({
                        "data": base64::engine::general_purpose::STANDARD.encode(&data),
                        "binary": true,
                    }),
                    1,
                    len,
                ),
            }
        }
    };
    if let Some(offset) = offset {
        chunk["offset"] = json!(offset);
    }
    (chunk, messages, bytes)
}

/// `JSON.stringify(items)`: the messages as one compact array, keys in the
/// server's order.
pub fn json_array(items: &[Box<RawValue>]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        compact_into(item.get(), &mut out);
    }
    out.push(']');
    out
}

/// Copy valid JSON text without insignificant whitespace.
fn compact_into(text: &str, out: &mut String) {
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_compacted_in_order() {
        let items: Vec<Box<RawValue>> =
            serde_json::from_str(r#"[ {"b": 1, "a": "x y \" z"} , [1, 2] ]"#).unwrap();
        assert_eq!(json_array(&items), r#"[{"b":1,"a":"x y \" z"},[1,2]]"#);
        assert_eq!(json_array(&[]), "[]");
    }

    #[test]
    fn live_modes() {
        assert_eq!(live_mode(None).unwrap(), LiveMode::Off);
        assert_eq!(live_mode(Some(&json!(false))).unwrap(), LiveMode::Off);
        assert_eq!(live_mode(Some(&json!(true))).unwrap(), LiveMode::Auto);
        assert_eq!(live_mode(Some(&json!("sse"))).unwrap(), LiveMode::Sse);
        assert_eq!(
            live_mode(Some(&json!("long-poll"))).unwrap(),
            LiveMode::LongPoll
        );
        assert!(live_mode(Some(&json!(3))).is_err());
    }

    #[test]
    fn binary_chunks_are_base64() {
        let (chunk, _, bytes) = render(Payload::Bytes(Bytes::from_static(&[0xff, 0])), None);
        assert_eq!(chunk["data"], "/wA=");
        assert_eq!(chunk["binary"], true);
        assert_eq!(bytes, 2);
    }
}
