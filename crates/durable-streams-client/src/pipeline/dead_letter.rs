//! Failed messages: the [`DeadLetter`] record, the dead-letter producer,
//! and how a failure is reported (callback, dead-letter stream) and then
//! acknowledged.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::builder::DeadLetterTarget;
use super::run::Shared;
use super::{Failure, Stage};
use crate::error::{DecodeKind, Error, ErrorKind, Result};
use crate::producer::Producer;
use crate::stream::{CreateOptions, JSON_CONTENT_TYPE};

/// One record of a dead-letter stream (a JSON message).
///
/// Read a dead-letter stream with `stream.read().json::<DeadLetter>()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The pipeline's name.
    pub pipeline: String,
    /// Where the read chunk holding the message starts in the source stream.
    pub offset: String,
    /// The offset right after that chunk.
    pub next_offset: String,
    /// The message's index within that chunk.
    pub index: usize,
    /// `decode`, `processor` or `batcher`.
    pub stage: String,
    /// The batcher's name when `stage` is `batcher`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batcher: Option<String>,
    /// The error's text.
    pub error: String,
    /// `json` (the payload is the message's JSON value) or `base64` (the
    /// payload is a base64 string of the bytes).
    pub encoding: String,
    /// The original message: its exact JSON text when `encoding` is `json`
    /// (key order and numbers as written; parse it with
    /// `serde_json::from_str(payload.get())`), else a JSON string holding
    /// the base64 of its bytes.
    pub payload: Box<RawValue>,
}

impl PartialEq for DeadLetter {
    fn eq(&self, other: &Self) -> bool {
        self.pipeline == other.pipeline
            && self.offset == other.offset
            && self.next_offset == other.next_offset
            && self.index == other.index
            && self.stage == other.stage
            && self.batcher == other.batcher
            && self.error == other.error
            && self.encoding == other.encoding
            && self.payload.get() == other.payload.get()
    }
}

impl DeadLetter {
    pub(super) fn from_failure(pipeline: &str, json: bool, failure: &Failure) -> DeadLetter {
        // The message's own bytes when they are one JSON value: not parsed
        // and written again, so nothing is reordered or reformatted.
        let raw = json
            .then(|| serde_json::from_slice::<Box<RawValue>>(&failure.payload).ok())
            .flatten();
        let (encoding, payload) = match raw {
            Some(raw) => ("json", raw),
            None => {
                let text = base64::engine::general_purpose::STANDARD.encode(&failure.payload);
                let raw =
                    serde_json::value::to_raw_value(&text).expect("a string always serializes");
                ("base64", raw)
            }
        };
        DeadLetter {
            pipeline: pipeline.to_owned(),
            offset: failure.position.offset.to_string(),
            next_offset: failure.position.next_offset.to_string(),
            index: failure.position.index,
            stage: failure.stage.as_str().to_owned(),
            batcher: match &failure.stage {
                Stage::Batcher(name) => Some(name.to_string()),
                _ => None,
            },
            error: failure.error.to_string(),
            encoding: encoding.to_owned(),
            payload,
        }
    }

    /// The original payload's bytes (decoded from base64, or the JSON text).
    pub fn payload_bytes(&self) -> Result<Vec<u8>> {
        if self.encoding == "base64" {
            let text: String = serde_json::from_str(self.payload.get())
                .map_err(|e| Error::decode(DecodeKind::Json, format!("bad base64 payload: {e}")))?;
            return base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| Error::decode(DecodeKind::Json, format!("bad base64 payload: {e}")));
        }
        Ok(self.payload.get().as_bytes().to_vec())
    }
}

impl Shared {
    /// Report a failed message; it counts as done once dead-lettered.
    pub(super) async fn fail(&self, seq: u64, failure: Failure) {
        self.fail_all(vec![(seq, failure)]).await;
    }

    /// Report failed messages; each counts as done once dead-lettered. All
    /// dead letters are queued before any receipt is awaited, so a failed
    /// batch costs about one round trip, not one per message.
    pub(super) async fn fail_all(&self, failures: Vec<(u64, Failure)>) {
        for (_, failure) in &failures {
            crate::telemetry::pipeline_failure(
                &self.name,
                failure.stage.as_str(),
                failure.position.offset.as_str(),
                failure.position.index,
                &failure.error,
            );
            if let Some(callback) = &self.on_failure {
                let call = std::panic::AssertUnwindSafe(|| callback(failure));
                if std::panic::catch_unwind(call).is_err() {
                    tracing::error!("pipeline on_failure callback panicked");
                }
            }
        }
        let Some(producer) = &self.dead_letters else {
            let seqs: Vec<u64> = failures.iter().map(|(seq, _)| *seq).collect();
            self.complete_all(&seqs);
            return;
        };
        let mut pending = Vec::with_capacity(failures.len());
        for (seq, failure) in failures {
            let record = DeadLetter::from_failure(&self.name, self.json, &failure);
            let ack = producer.send_json(&record).await;
            pending.push((seq, failure, ack));
        }
        let mut written = Vec::with_capacity(pending.len());
        for (seq, failure, ack) in pending {
            let receipt = match ack {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match receipt {
                Ok(receipt) => {
                    crate::telemetry::pipeline_dead_letter(
                        &self.name,
                        failure.position.offset.as_str(),
                        receipt.offset.as_ref().map(|o| o.as_str()),
                    );
                    written.push(seq);
                }
                Err(e) => self.set_fatal(
                    Error::new(e.kind().clone())
                        .with_message(format!(
                            "could not write a dead letter for the message at {} #{}: {e}",
                            failure.position.offset, failure.position.index
                        ))
                        .with_source(e),
                ),
            }
        }
        self.complete_all(&written);
    }
}

/// The dead-letter producer, and whether the pipeline owns it (made from a
/// [`DeadLetterTarget::Stream`]: closed at the end, not only flushed). A
/// dead-letter stream is created (JSON) when missing; one that exists with
/// another configuration is used as it is.
pub(super) async fn open_dead_letters(
    target: Option<DeadLetterTarget>,
    pipeline: &str,
) -> Result<(Option<Arc<Producer>>, bool)> {
    Ok(match target {
        None => (None, false),
        Some(DeadLetterTarget::Producer(p)) => (Some(p), false),
        Some(DeadLetterTarget::Stream(s)) => {
            match s.create_with(CreateOptions::json()).await {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::Conflict(_)) => {}
                Err(e) => {
                    return Err(Error::new(e.kind().clone())
                        .with_message(format!("could not create the dead-letter stream: {e}"))
                        .with_source(e));
                }
            }
            // The default epoch comes from the clock: each run is newer.
            let producer = Producer::builder(&s, format!("{pipeline}-dead-letters"))
                .auto_claim(true)
                .content_type(JSON_CONTENT_TYPE)
                .linger(Duration::from_millis(1))
                .build()?;
            (Some(Arc::new(producer)), true)
        }
    })
}

/// Close (when owned) or flush the dead-letter producer; a failure is only
/// logged (every dead letter was already awaited).
pub(super) async fn close_dead_letters(producer: Option<&Producer>, owned: bool) {
    let Some(producer) = producer else {
        return;
    };
    let flushed = if owned {
        producer.close().await
    } else {
        producer.flush().await
    };
    if let Err(e) = flushed {
        tracing::warn!(error = %e, "flushing the dead-letter producer failed");
    }
}
