//! Telemetry names in one place.
//!
//! Every request runs inside a `tracing` span named `durable_streams.request`
//! with fields `method`, `operation`, `path`, `attempt`, `status` and
//! `duration_ms`. Retries and reconnects are `DEBUG`/`INFO` events.
//!
//! With the `metrics` feature, these metrics are emitted through the
//! [`metrics`](https://docs.rs/metrics) facade:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `durable_streams_requests_total` | counter | `operation`, `status` (`error` for transport failures) |
//! | `durable_streams_request_duration_seconds` | histogram | `operation` |
//! | `durable_streams_retries_total` | counter | `operation`, `reason` |
//! | `durable_streams_reconnects_total` | counter | `mode` |
//! | `durable_streams_read_chunks_total` | counter | `mode` |
//! | `durable_streams_read_bytes_total` | counter | `mode` |
//! | `durable_streams_producer_batches_total` | counter | `result` (`ok`, `duplicate`, `failed`) |
//! | `durable_streams_producer_messages_total` | counter | `result` |
//! | `durable_streams_producer_bytes_total` | counter | |
//! | `durable_streams_producer_batch_duration_seconds` | histogram | |
//! | `durable_streams_producer_retries_total` | counter | `reason` |
//! | `durable_streams_producer_epoch_claims_total` | counter | |
//! | `durable_streams_consumer_batches_total` | counter | `consumer` |
//! | `durable_streams_consumer_items_total` | counter | `consumer` |
//! | `durable_streams_consumer_bytes_total` | counter | `consumer` |
//! | `durable_streams_consumer_reconnects_total` | counter | `consumer`, `reason` |
//! | `durable_streams_consumer_reconnect_delay_seconds` | histogram | `consumer` |
//!
//! Producer events (target `durable_streams_client::telemetry`):
//! `producer.batch_sent` (DEBUG; `messages`, `bytes`, `duration_ms`, `epoch`,
//! `seq`, `duplicate`), `producer.duplicate` (INFO), `producer.epoch_claimed`
//! (INFO; `epoch`). The first failed batch of an epoch is a WARN event.
//!
//! [Consumers](crate::consumer) run inside a `durable_streams.consumer` span
//! (fields `consumer`, `path`) and emit the events `durable_streams.consumer.batch`
//! (`DEBUG`; `count`, `bytes`, `offset`) and `durable_streams.consumer.reconnect`
//! (`WARN`; `attempt`, `delay_ms`, `reason`, `error`), named in the `event` field.

use std::time::Duration;

/// Names of the metrics this crate emits.
pub mod metric_names {
    /// Counter of completed requests.
    pub const REQUESTS: &str = "durable_streams_requests_total";
    /// Histogram of request durations in seconds.
    pub const REQUEST_DURATION: &str = "durable_streams_request_duration_seconds";
    /// Counter of retried requests.
    pub const RETRIES: &str = "durable_streams_retries_total";
    /// Counter of live-read reconnects.
    pub const RECONNECTS: &str = "durable_streams_reconnects_total";
    /// Counter of chunks delivered by reads.
    pub const READ_CHUNKS: &str = "durable_streams_read_chunks_total";
    /// Counter of bytes delivered by reads.
    pub const READ_BYTES: &str = "durable_streams_read_bytes_total";
    /// Counter of producer batches by result.
    pub const PRODUCER_BATCHES: &str = "durable_streams_producer_batches_total";
    /// Counter of producer messages by result.
    pub const PRODUCER_MESSAGES: &str = "durable_streams_producer_messages_total";
    /// Counter of producer request body bytes acknowledged.
    pub const PRODUCER_BYTES: &str = "durable_streams_producer_bytes_total";
    /// Histogram of producer batch round trips (first send to answer, retries included).
    pub const PRODUCER_BATCH_DURATION: &str = "durable_streams_producer_batch_duration_seconds";
    /// Counter of producer resends (sequence gaps).
    pub const PRODUCER_RETRIES: &str = "durable_streams_producer_retries_total";
    /// Counter of epochs claimed automatically after a stale-epoch answer.
    pub const PRODUCER_EPOCH_CLAIMS: &str = "durable_streams_producer_epoch_claims_total";
    /// Counter of batches handed to consumer handlers.
    pub const CONSUMER_BATCHES: &str = "durable_streams_consumer_batches_total";
    /// Counter of items (JSON messages, or byte chunks) handed to consumer handlers.
    pub const CONSUMER_ITEMS: &str = "durable_streams_consumer_items_total";
    /// Counter of bytes handed to consumer handlers.
    pub const CONSUMER_BYTES: &str = "durable_streams_consumer_bytes_total";
    /// Counter of consumer reconnects after errors.
    pub const CONSUMER_RECONNECTS: &str = "durable_streams_consumer_reconnects_total";
    /// Histogram of consumer reconnect delays in seconds.
    pub const CONSUMER_RECONNECT_DELAY: &str = "durable_streams_consumer_reconnect_delay_seconds";
}

/// Event names (the `event` field of consumer tracing events).
pub mod event_names {
    /// A batch was received and handed to a consumer handler.
    pub const CONSUMER_BATCH: &str = "durable_streams.consumer.batch";
    /// A consumer reconnects after an error.
    pub const CONSUMER_RECONNECT: &str = "durable_streams.consumer.reconnect";
}

/// A producer batch was acknowledged (new data or a duplicate).
pub(crate) fn producer_batch_sent(
    messages: usize,
    bytes: usize,
    elapsed: Duration,
    epoch: u64,
    seq: u64,
    duplicate: bool,
) {
    tracing::debug!(
        event = "producer.batch_sent",
        messages,
        bytes,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        epoch,
        seq,
        duplicate,
    );
    if duplicate {
        tracing::info!(event = "producer.duplicate", epoch, seq, messages);
    }
    #[cfg(feature = "metrics")]
    {
        let result = if duplicate { "duplicate" } else { "ok" };
        metrics::counter!(metric_names::PRODUCER_BATCHES, "result" => result).increment(1);
        metrics::counter!(metric_names::PRODUCER_MESSAGES, "result" => result)
            .increment(messages as u64);
        metrics::counter!(metric_names::PRODUCER_BYTES).increment(bytes as u64);
        metrics::histogram!(metric_names::PRODUCER_BATCH_DURATION).record(elapsed.as_secs_f64());
    }
}

/// A producer batch failed for good.
pub(crate) fn producer_batch_failed(_messages: usize) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!(metric_names::PRODUCER_BATCHES, "result" => "failed").increment(1);
        metrics::counter!(metric_names::PRODUCER_MESSAGES, "result" => "failed")
            .increment(_messages as u64);
    }
}

/// A producer batch is sent again (same epoch and seq).
pub(crate) fn producer_retry(_reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(metric_names::PRODUCER_RETRIES, "reason" => _reason).increment(1);
}

/// The producer claimed a new epoch after a stale-epoch answer.
pub(crate) fn producer_epoch_claimed(epoch: u64) {
    tracing::info!(event = "producer.epoch_claimed", epoch);
    #[cfg(feature = "metrics")]
    metrics::counter!(metric_names::PRODUCER_EPOCH_CLAIMS).increment(1);
}

#[cfg(feature = "metrics")]
pub(crate) fn request_done(operation: &'static str, status: u16, elapsed: Duration) {
    metrics::counter!(metric_names::REQUESTS, "operation" => operation, "status" => status.to_string()).increment(1);
    metrics::histogram!(metric_names::REQUEST_DURATION, "operation" => operation)
        .record(elapsed.as_secs_f64());
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn request_done(_operation: &'static str, _status: u16, _elapsed: Duration) {}

#[cfg(feature = "metrics")]
pub(crate) fn request_failed(operation: &'static str, elapsed: Duration) {
    metrics::counter!(metric_names::REQUESTS, "operation" => operation, "status" => "error")
        .increment(1);
    metrics::histogram!(metric_names::REQUEST_DURATION, "operation" => operation)
        .record(elapsed.as_secs_f64());
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn request_failed(_operation: &'static str, _elapsed: Duration) {}

#[cfg(feature = "metrics")]
pub(crate) fn retry(operation: &'static str, reason: &'static str) {
    metrics::counter!(metric_names::RETRIES, "operation" => operation, "reason" => reason)
        .increment(1);
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn retry(_operation: &'static str, _reason: &'static str) {}

#[cfg(feature = "metrics")]
pub(crate) fn reconnect(mode: &'static str) {
    metrics::counter!(metric_names::RECONNECTS, "mode" => mode).increment(1);
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn reconnect(_mode: &'static str) {}

#[cfg(feature = "metrics")]
pub(crate) fn chunk_delivered(mode: &'static str, bytes: usize) {
    metrics::counter!(metric_names::READ_CHUNKS, "mode" => mode).increment(1);
    metrics::counter!(metric_names::READ_BYTES, "mode" => mode).increment(bytes as u64);
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn chunk_delivered(_mode: &'static str, _bytes: usize) {}

#[cfg(feature = "metrics")]
pub(crate) fn consumer_batch(consumer: &str, items: usize, bytes: usize) {
    let consumer = consumer.to_owned();
    metrics::counter!(metric_names::CONSUMER_BATCHES, "consumer" => consumer.clone()).increment(1);
    metrics::counter!(metric_names::CONSUMER_ITEMS, "consumer" => consumer.clone())
        .increment(items as u64);
    metrics::counter!(metric_names::CONSUMER_BYTES, "consumer" => consumer).increment(bytes as u64);
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn consumer_batch(_consumer: &str, _items: usize, _bytes: usize) {}

#[cfg(feature = "metrics")]
pub(crate) fn consumer_reconnect(consumer: &str, reason: &'static str, delay: Duration) {
    let consumer = consumer.to_owned();
    metrics::counter!(metric_names::CONSUMER_RECONNECTS, "consumer" => consumer.clone(), "reason" => reason)
        .increment(1);
    metrics::histogram!(metric_names::CONSUMER_RECONNECT_DELAY, "consumer" => consumer)
        .record(delay.as_secs_f64());
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn consumer_reconnect(_consumer: &str, _reason: &'static str, _delay: Duration) {}
