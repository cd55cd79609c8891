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
//! | `durable_streams_pipeline_acked_messages_total` | counter | `pipeline` |
//! | `durable_streams_pipeline_acked_chunks_total` | counter | `pipeline` |
//! | `durable_streams_pipeline_checkpoints_total` | counter | `pipeline` |
//! | `durable_streams_pipeline_failures_total` | counter | `pipeline`, `stage` (`decode`, `processor`, `batcher`) |
//! | `durable_streams_pipeline_dead_letters_total` | counter | `pipeline` |
//! | `durable_streams_pipeline_batches_total` | counter | `pipeline`, `batcher` |
//! | `durable_streams_pipeline_batch_duration_seconds` | histogram | `pipeline`, `batcher` |
//! | `durable_streams_pipeline_reconnects_total` | counter | `pipeline`, `reason` |
//! | `durable_streams_supervisor_restarts_total` | counter | `child`, `reason` (`error`, `panic`, `exit`) |
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
//!
//! [Pipelines](crate::pipeline) run inside a `durable_streams.pipeline` span
//! (fields `pipeline`, `path`) and emit, in the `event` field:
//!
//! | event | level | fields |
//! |---|---|---|
//! | `durable_streams.pipeline.ack` | `TRACE` | `chunks`, `messages` (the acknowledged front moved) |
//! | `durable_streams.pipeline.checkpoint` | `DEBUG` | `offset` (saved to the store / published) |
//! | `durable_streams.pipeline.failure` | `WARN` | `stage`, `offset`, `index`, `error` |
//! | `durable_streams.pipeline.dead_letter` | `INFO` | `offset`, `dead_letter_offset` |
//! | `durable_streams.pipeline.reconnect` | `WARN` | `attempt`, `delay_ms`, `reason`, `error` |
//!
//! The [supervisor](crate::supervisor) emits `durable_streams.supervisor.restart`
//! (`WARN`; `child`, `reason`, `delay_ms`, `error`) and
//! `durable_streams.supervisor.gave_up` (`ERROR`; `child`, `restarts`, `period_ms`).

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
    /// Counter of subscription worker events, labelled `event` (claim,
    /// heartbeat, ack, release, fenced, lease_lost) and `subscription`.
    pub const SUBSCRIPTION_EVENTS: &str = "durable_streams_subscription_events_total";
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
    /// Counter of pipeline messages acknowledged (done or dead-lettered, in offset order).
    pub const PIPELINE_ACKED_MESSAGES: &str = "durable_streams_pipeline_acked_messages_total";
    /// Counter of pipeline read chunks acknowledged.
    pub const PIPELINE_ACKED_CHUNKS: &str = "durable_streams_pipeline_acked_chunks_total";
    /// Counter of pipeline checkpoints committed.
    pub const PIPELINE_CHECKPOINTS: &str = "durable_streams_pipeline_checkpoints_total";
    /// Counter of failed pipeline messages by stage.
    pub const PIPELINE_FAILURES: &str = "durable_streams_pipeline_failures_total";
    /// Counter of dead letters written.
    pub const PIPELINE_DEAD_LETTERS: &str = "durable_streams_pipeline_dead_letters_total";
    /// Counter of batches handed to batch functions.
    pub const PIPELINE_BATCHES: &str = "durable_streams_pipeline_batches_total";
    /// Histogram of batch function durations in seconds.
    pub const PIPELINE_BATCH_DURATION: &str = "durable_streams_pipeline_batch_duration_seconds";
    /// Counter of pipeline reader reconnects after errors.
    pub const PIPELINE_RECONNECTS: &str = "durable_streams_pipeline_reconnects_total";
    /// Counter of supervised child restarts.
    pub const SUPERVISOR_RESTARTS: &str = "durable_streams_supervisor_restarts_total";
}

/// Event names (the `event` field of consumer tracing events).
pub mod event_names {
    /// A batch was received and handed to a consumer handler.
    pub const CONSUMER_BATCH: &str = "durable_streams.consumer.batch";
    /// A consumer reconnects after an error.
    pub const CONSUMER_RECONNECT: &str = "durable_streams.consumer.reconnect";
    /// The acknowledged front of a pipeline moved.
    pub const PIPELINE_ACK: &str = "durable_streams.pipeline.ack";
    /// A pipeline committed its checkpoint.
    pub const PIPELINE_CHECKPOINT: &str = "durable_streams.pipeline.checkpoint";
    /// A pipeline message failed.
    pub const PIPELINE_FAILURE: &str = "durable_streams.pipeline.failure";
    /// A failed pipeline message was written to the dead-letter stream.
    pub const PIPELINE_DEAD_LETTER: &str = "durable_streams.pipeline.dead_letter";
    /// A pipeline reader reconnects after an error.
    pub const PIPELINE_RECONNECT: &str = "durable_streams.pipeline.reconnect";
    /// A supervisor restarts a child.
    pub const SUPERVISOR_RESTART: &str = "durable_streams.supervisor.restart";
    /// A supervisor exceeded its restart intensity and stops.
    pub const SUPERVISOR_GAVE_UP: &str = "durable_streams.supervisor.gave_up";
    /// A subscription worker claimed a wake.
    pub const SUBSCRIPTION_CLAIM: &str = "durable_streams.subscription.claim";
    /// A subscription worker extended its lease (an ack without `done`).
    pub const SUBSCRIPTION_HEARTBEAT: &str = "durable_streams.subscription.heartbeat";
    /// A subscription worker acked a wake with `done`.
    pub const SUBSCRIPTION_ACK: &str = "durable_streams.subscription.ack";
    /// A subscription worker released a wake without finishing it.
    pub const SUBSCRIPTION_RELEASE: &str = "durable_streams.subscription.release";
    /// The server fenced a worker's wake (stale generation or wake id).
    pub const SUBSCRIPTION_FENCED: &str = "durable_streams.subscription.fenced";
    /// A worker's lease lapsed (paused or cut off past the lease) and it
    /// stopped the wake's work without committing.
    pub const SUBSCRIPTION_LEASE_LOST: &str = "durable_streams.subscription.lease_lost";
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

/// The acknowledged front of a pipeline moved past `chunks` chunks.
pub(crate) fn pipeline_acked(pipeline: &str, chunks: usize, messages: usize) {
    tracing::trace!(
        event = event_names::PIPELINE_ACK,
        chunks,
        messages,
        "pipeline ack"
    );
    #[cfg(feature = "metrics")]
    {
        let pipeline = pipeline.to_owned();
        metrics::counter!(metric_names::PIPELINE_ACKED_CHUNKS, "pipeline" => pipeline.clone())
            .increment(chunks as u64);
        metrics::counter!(metric_names::PIPELINE_ACKED_MESSAGES, "pipeline" => pipeline)
            .increment(messages as u64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = pipeline;
}

/// A pipeline committed `offset`.
pub(crate) fn pipeline_checkpoint(pipeline: &str, offset: &str) {
    tracing::debug!(event = event_names::PIPELINE_CHECKPOINT, %offset, "pipeline checkpoint");
    #[cfg(feature = "metrics")]
    metrics::counter!(metric_names::PIPELINE_CHECKPOINTS, "pipeline" => pipeline.to_owned())
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = pipeline;
}

/// A pipeline message failed.
pub(crate) fn pipeline_failure(
    pipeline: &str,
    stage: &'static str,
    offset: &str,
    index: usize,
    error: &dyn std::fmt::Display,
) {
    tracing::warn!(
        event = event_names::PIPELINE_FAILURE,
        stage,
        offset,
        index,
        error = %error,
        "pipeline message failed"
    );
    #[cfg(feature = "metrics")]
    metrics::counter!(metric_names::PIPELINE_FAILURES, "pipeline" => pipeline.to_owned(), "stage" => stage)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = pipeline;
}

/// A dead letter was written.
pub(crate) fn pipeline_dead_letter(pipeline: &str, offset: &str, dead_letter_offset: Option<&str>) {
    tracing::info!(
        event = event_names::PIPELINE_DEAD_LETTER,
        offset,
        dead_letter_offset = ?dead_letter_offset,
        "pipeline dead letter written"
    );
    #[cfg(feature = "metrics")]
    metrics::counter!(metric_names::PIPELINE_DEAD_LETTERS, "pipeline" => pipeline.to_owned())
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = pipeline;
}

/// A batch function returned.
pub(crate) fn pipeline_batch(_pipeline: &str, _batcher: &str, _size: usize, _elapsed: Duration) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!(metric_names::PIPELINE_BATCHES, "pipeline" => _pipeline.to_owned(), "batcher" => _batcher.to_owned())
            .increment(1);
        metrics::histogram!(metric_names::PIPELINE_BATCH_DURATION, "pipeline" => _pipeline.to_owned(), "batcher" => _batcher.to_owned())
            .record(_elapsed.as_secs_f64());
    }
}

/// A pipeline reader reconnects after `error`.
pub(crate) fn pipeline_reconnect(
    pipeline: &str,
    reason: &'static str,
    error: &dyn std::fmt::Display,
    attempt: u32,
    delay: Duration,
) {
    tracing::warn!(
        event = event_names::PIPELINE_RECONNECT,
        attempt,
        delay_ms = delay.as_millis() as u64,
        reason,
        %error,
        "pipeline reader reconnecting"
    );
    #[cfg(feature = "metrics")]
    metrics::counter!(metric_names::PIPELINE_RECONNECTS, "pipeline" => pipeline.to_owned(), "reason" => reason)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = pipeline;
}

/// A supervisor restarts `child` after `delay`.
pub(crate) fn supervisor_restart(
    child: &str,
    reason: &'static str,
    delay: Duration,
    error: Option<&dyn std::fmt::Display>,
) {
    tracing::warn!(
        event = event_names::SUPERVISOR_RESTART,
        child,
        reason,
        delay_ms = delay.as_millis() as u64,
        error = error.map(tracing::field::display),
        "supervisor restarting child"
    );
    #[cfg(feature = "metrics")]
    metrics::counter!(metric_names::SUPERVISOR_RESTARTS, "child" => child.to_owned(), "reason" => reason)
        .increment(1);
}

/// A subscription worker event (`event` is the last part of one of the
/// `SUBSCRIPTION_*` event names: claim, heartbeat, ack, release, fenced,
/// lease_lost).
pub(crate) fn subscription_event(event: &'static str, subscription: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(metric_names::SUBSCRIPTION_EVENTS, "event" => event, "subscription" => subscription.to_owned())
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (event, subscription);
}
