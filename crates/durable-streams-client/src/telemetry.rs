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
