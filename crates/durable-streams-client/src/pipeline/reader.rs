//! The pipeline's source: one reader that reads the stream, reconnects
//! after retryable errors, registers each chunk with the ack tracker
//! (holding read-ahead window permits) and hands its messages to the
//! processors.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::builder::{DecodeFn, Decoded, KeyFn};
use super::run::Shared;
use super::stages::Envelope;
use super::{Failure, Message, Position, Stage};
use crate::consumer::StopReason;
use crate::error::Result;
use crate::offset::Offset;
use crate::read::{Chunk, LiveMode, Session};
use crate::retry::{Backoff, RetryPolicy};
use crate::runtime::internal;
use crate::stream::Stream;

/// Read-ahead window permits held by a chunk until it is acknowledged.
pub(super) type Hold = Option<(OwnedSemaphorePermit, Option<OwnedSemaphorePermit>)>;

/// How the reader hands messages to the processors.
pub(super) enum Dispatch<T> {
    /// One queue that every worker takes from.
    AnyWorker(mpsc::Sender<Envelope<T>>),
    /// One queue per worker; the partition key picks it.
    Partitioned(Vec<mpsc::Sender<Envelope<T>>>),
}

pub(super) struct Reader<T> {
    pub(super) stream: Stream,
    pub(super) live: LiveMode,
    pub(super) json: bool,
    pub(super) retry: RetryPolicy,
    pub(super) decode: DecodeFn<T>,
    pub(super) partition: Option<KeyFn<T>>,
    pub(super) to_processors: Dispatch<T>,
    pub(super) shared: Arc<Shared>,
    pub(super) messages: Arc<Semaphore>,
    pub(super) max_messages: usize,
    pub(super) bytes: Arc<Semaphore>,
    pub(super) max_bytes: usize,
}

impl<T: Send + 'static> Reader<T> {
    pub(super) async fn run(self, start: Offset, stop: &CancellationToken) -> Result<StopReason> {
        let mut position = start;
        // One budget for the reader's reconnects, reset by progress.
        let mut backoff = Backoff::new(&self.retry);
        loop {
            let mut session =
                Session::new(self.stream.clone(), position.clone(), self.live, self.json);
            // One decoder per session: a framed one carries partial frames
            // between the session's chunks, and starts clean on a reconnect
            // (which resumes from the last exact position, where no frame
            // was carried).
            let mut decode = (self.decode)(&position);
            let error = loop {
                let next = tokio::select! {
                    biased;
                    _ = stop.cancelled() => return Ok(StopReason::Shutdown),
                    next = session.next_chunk() => next,
                };
                let mut chunk = match next {
                    None => return Ok(StopReason::CaughtUp),
                    Some(Err(e)) => break e,
                    Some(Ok(chunk)) => chunk,
                };
                // Decode first: it may make the chunk's offset inexact.
                let items = decode(&mut chunk).map_err(|e| e.with_url(self.stream.url()))?;
                backoff.reset();
                let closed = chunk.closed;
                // Reconnects resume from the last exact position (a piece of
                // a large response carries where the response started).
                let chunk_start = position.clone();
                if chunk.exact && crate::read::checkpoint_moves(Some(&position), &chunk.offset) {
                    position = chunk.offset.clone();
                }
                match self.forward_chunk(chunk, items, chunk_start, stop).await {
                    Ok(true) => {}
                    Ok(false) => return Ok(StopReason::Shutdown),
                    Err(e) => return Err(e),
                }
                if closed {
                    return Ok(StopReason::Closed);
                }
            };
            let delay = if error.is_retryable() {
                backoff.next_delay(error.retry_after())
            } else {
                None
            };
            let Some(delay) = delay else {
                tracing::warn!(%error, attempts = backoff.retries(), "pipeline reader stopped by an error");
                return Err(error);
            };
            let attempt = backoff.retries();
            crate::telemetry::pipeline_reconnect(
                &self.shared.name,
                error.kind().label(),
                &error,
                attempt,
                delay,
            );
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(StopReason::Shutdown),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Wait for read-ahead window room for a chunk of `count` messages and
    /// `bytes` bytes (a larger chunk takes the whole window); `None` when
    /// stopped first.
    async fn window_room(
        &self,
        count: usize,
        bytes: usize,
        stop: &CancellationToken,
    ) -> Result<Option<Hold>> {
        if count == 0 {
            return Ok(Some(None));
        }
        let want_messages = count.min(self.max_messages) as u32;
        let want_bytes = bytes.min(self.max_bytes) as u32;
        let acquire = async {
            let m = Arc::clone(&self.messages)
                .acquire_many_owned(want_messages)
                .await;
            let b = if want_bytes == 0 {
                None
            } else {
                Some(Arc::clone(&self.bytes).acquire_many_owned(want_bytes).await)
            };
            (m, b)
        };
        let (m, b) = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(None),
            permits = acquire => permits,
        };
        let closed = || internal("pipeline window closed");
        Ok(Some(Some((
            m.map_err(|_| closed())?,
            b.transpose().map_err(|_| closed())?,
        ))))
    }

    /// Register one chunk and hand its messages to the processors. `false`
    /// when stopped while waiting for window room (nothing registered).
    async fn forward_chunk(
        &self,
        chunk: Chunk,
        items: Decoded<T>,
        chunk_start: Offset,
        stop: &CancellationToken,
    ) -> Result<bool> {
        let count = items.len();
        let bytes = chunk.data.len();
        drop(chunk.data);
        let Some(hold) = self.window_room(count, bytes, stop).await? else {
            return Ok(false);
        };
        let (seq, advance) = {
            let mut tracker = self
                .shared
                .tracker
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            tracker.register(count, chunk.offset.clone(), chunk.exact, hold)
        };
        if let Some(advance) = advance {
            self.shared.advanced(advance);
        }
        for (index, (data, payload)) in items.into_iter().enumerate() {
            let position = Position {
                offset: chunk_start.clone(),
                next_offset: chunk.offset.clone(),
                index,
            };
            let data = match data {
                Ok(data) => data,
                Err(error) => {
                    self.shared
                        .fail(
                            seq,
                            Failure {
                                position,
                                payload,
                                error: error.with_url(self.stream.url()),
                                stage: Stage::Decode,
                            },
                        )
                        .await;
                    continue;
                }
            };
            let envelope = Envelope {
                seq,
                message: Message {
                    data,
                    position,
                    payload,
                },
            };
            let sent = match &self.to_processors {
                Dispatch::AnyWorker(tx) => tx.send(envelope).await,
                Dispatch::Partitioned(txs) => {
                    let key = (self.partition.as_ref().expect("partitioned"))(&envelope.message);
                    txs[(key % txs.len() as u64) as usize].send(envelope).await
                }
            };
            if sent.is_err() {
                return Err(internal("pipeline processors are gone"));
            }
        }
        Ok(true)
    }
}
