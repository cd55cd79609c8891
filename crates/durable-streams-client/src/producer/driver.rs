//! The producer's background task: sequencing, pipelining, retries of
//! sequence gaps, epoch changes and failure fan-out.
//!
//! One task owns all sequencing state, so there are no locks around it; the
//! appending side only touches the open batch and the sealed queue in
//! [`ProducerShared::state`]. Requests run as futures polled by this task (the HTTP
//! connections themselves live in the client's pool). What an answer means
//! and what the task does about it is in [`answer`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use reqwest::Method;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::batch::SealedBatch;
use super::{FailedBatch, MAX_SAFE_INTEGER, ProducerShared};
use crate::error::{Error, ErrorKind, Result};
use crate::request::{BufferedResponse, Idempotency, RequestSpec, names};
use crate::retry::Backoff;

mod answer;

/// Requests from the [`super::Producer`] handle to its task.
#[derive(Debug)]
pub(crate) enum ProducerControl {
    /// Move to the next epoch once the current one's requests resolve; the
    /// reply carries the new epoch.
    Restart(oneshot::Sender<Result<u64>>),
}

/// What one request attempt came back with.
struct Sent {
    batch: SealedBatch,
    epoch: u64,
    spec: RequestSpec,
    started: Instant,
    backoff: Backoff,
    result: Result<BufferedResponse>,
}

type InFlight = FuturesUnordered<Pin<Box<dyn Future<Output = Sent> + Send>>>;

pub(crate) struct Driver {
    shared: Arc<ProducerShared>,
    control: mpsc::Receiver<ProducerControl>,
    cancel: CancellationToken,
    epoch: u64,
    next_seq: u64,
    /// A request of the current epoch was acknowledged; until then only one
    /// request is in flight, because a server that has state for an older
    /// epoch rejects a new epoch's first request unless its seq is 0.
    established: bool,
    /// Sealed batches not yet sent in this epoch, in ordinal order.
    queue: VecDeque<SealedBatch>,
    window: Window,
    /// Batches of this epoch to send again (their earlier seqs are now done).
    resend: VecDeque<SealedBatch>,
    /// Batches answered with a sequence gap, waiting for lower seqs, by seq.
    parked: BTreeMap<u64, SealedBatch>,
    in_flight: InFlight,
    /// Acknowledged seqs of this epoch above `acked_below`.
    acked: BTreeSet<u64>,
    /// Every seq below this is acknowledged in this epoch.
    acked_below: u64,
    /// Resolved (acked or failed) ordinals above `resolved_below`.
    resolved: BTreeSet<u64>,
    resolved_below: u64,
    /// An epoch change waiting for the old epoch's requests to resolve.
    pending_epoch: Option<u64>,
    /// Batches of the old epoch to send again in the new one.
    reclaim: Vec<SealedBatch>,
    restart_waiters: Vec<oneshot::Sender<Result<u64>>>,
    poisoned: Option<Error>,
    /// The server's epoch from a stale-epoch answer we did not claim past;
    /// a restart must go beyond it, or its seq 0 would be taken for a
    /// duplicate of the fencing producer's.
    fenced_by: Option<u64>,
    /// The (epoch, seq) of this producer's successful close. A repeated
    /// close re-sends that tuple, so the server answers it as a duplicate
    /// (PROTOCOL.md 5.2.1) instead of a conflict on a closed stream.
    closed_at: Option<(u64, u64)>,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<ProducerShared>,
        control: mpsc::Receiver<ProducerControl>,
        cancel: CancellationToken,
        epoch: u64,
    ) -> Self {
        let max_in_flight = shared.max_in_flight;
        Driver {
            shared,
            control,
            cancel,
            epoch,
            next_seq: 0,
            window: Window::new(max_in_flight),
            established: false,
            queue: VecDeque::new(),
            resend: VecDeque::new(),
            parked: BTreeMap::new(),
            in_flight: FuturesUnordered::new(),
            acked: BTreeSet::new(),
            acked_below: 0,
            resolved: BTreeSet::new(),
            resolved_below: 0,
            pending_epoch: None,
            reclaim: Vec::new(),
            restart_waiters: Vec::new(),
            poisoned: None,
            fenced_by: None,
            closed_at: None,
        }
    }

    pub(crate) async fn run(mut self) {
        // Appenders and waiters (flush) learn that the task is gone, however
        // it ends (a panic included).
        let _exit = ExitGuard(Arc::clone(&self.shared));
        let mut control_open = true;
        loop {
            let linger_deadline = self.step();
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                ctrl = self.control.recv(), if control_open => match ctrl {
                    Some(ProducerControl::Restart(reply)) => self.on_restart(reply),
                    None => control_open = false,
                },
                Some(sent) = self.in_flight.next(), if !self.in_flight.is_empty() => self.on_sent(sent),
                _ = self.shared.wake.notified() => {}
                _ = sleep_until(linger_deadline), if linger_deadline.is_some() => {}
            }
        }
    }

    fn limit(&self) -> usize {
        if self.established {
            self.window.current
        } else {
            1
        }
    }

    fn can_send(&self) -> bool {
        self.pending_epoch.is_none()
            && self.poisoned.is_none()
            && self.in_flight.len() < self.limit()
    }

    /// Take sealed batches, seal a lingering open batch when a request slot
    /// is free, and send what fits. Returns when the open batch's linger
    /// time ends, if the task should wake up for it.
    fn step(&mut self) -> Option<Instant> {
        let mut deadline = None;
        let mut failed = Vec::new();
        {
            self.queue.extend(self.shared.take_sealed());
            // While requests are backed up, the open batch keeps growing up to
            // its limits: bigger batches under load, like Kafka's accumulator.
            if self.can_send() && self.queue.is_empty() && self.resend.is_empty() {
                let mut state = self.shared.lock();
                if let Some(opened) = state.open.opened_at {
                    let due = opened + self.shared.linger;
                    if Instant::now() >= due {
                        // Queued behind any batch sealed meanwhile.
                        self.shared.seal_open(&mut state);
                    } else {
                        deadline = Some(due);
                    }
                }
                drop(state);
                self.queue.extend(self.shared.take_sealed());
            }
            if self.poisoned.is_some() {
                failed.extend(self.queue.drain(..));
            }
        }
        if let Some(error) = self.poisoned.clone() {
            for batch in failed {
                self.fail(batch, error.clone());
            }
            return None;
        }
        self.pump();
        deadline
    }

    fn pump(&mut self) {
        while self.can_send() {
            // While requests are being reordered on the way (a sequence gap
            // is parked or waiting to be resent), new sequences would only
            // gap too, each a wasted upload: resend in order first.
            let reordering = !self.parked.is_empty() || !self.resend.is_empty();
            let next = match self.resend.pop_front() {
                Some(batch) => Some(batch),
                None if reordering => None,
                None => self.queue.pop_front(),
            };
            let Some(mut batch) = next else {
                break;
            };
            let repeat_close = match self.closed_at {
                Some((epoch, seq)) if batch.close && epoch == self.epoch => Some(seq),
                _ => None,
            };
            if batch.seq.is_none() && repeat_close.is_some() {
                // The tuple of our own earlier close: a duplicate is expected.
                batch.uncertain = true;
            }
            let seq = match batch.seq.or(repeat_close) {
                Some(seq) => seq,
                None => {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.shared.next_seq.store(self.next_seq, Ordering::Relaxed);
                    seq
                }
            };
            batch.seq = Some(seq);
            batch.sent_after_all_lower_acked = self.acked_below == seq;
            match self.request_for(&batch, seq) {
                Ok(spec) => self.launch(batch, spec),
                Err(error) => self.fail(batch, error),
            }
        }
    }

    fn request_for(&self, batch: &SealedBatch, seq: u64) -> Result<RequestSpec> {
        let operation = if batch.close {
            "producer_close"
        } else {
            "producer_append"
        };
        let mut spec = RequestSpec::new(Method::POST, operation)
            .header(names::PRODUCER_ID, &self.shared.producer_id)?
            .header(names::PRODUCER_EPOCH, self.epoch.to_string())?
            .header(names::PRODUCER_SEQ, seq.to_string())?
            // Same (id, epoch, seq) on every attempt: the server deduplicates,
            // so even a request whose answer was lost is safe to repeat.
            .idempotency(Idempotency::Safe)
            .body(batch.body.clone());
        if !batch.body.is_empty() {
            spec = spec.header(reqwest::header::CONTENT_TYPE, &self.shared.content_type)?;
        }
        if batch.close {
            spec = spec.header(names::CLOSED, "true")?;
        }
        Ok(spec)
    }

    fn launch(&mut self, mut batch: SealedBatch, spec: RequestSpec) {
        let inner = Arc::clone(&self.shared.stream.inner);
        let epoch = self.epoch;
        let first_sent = *batch.first_sent.get_or_insert_with(Instant::now);
        let deadline = first_sent + self.shared.delivery_timeout;
        if Instant::now() >= deadline {
            // Waited too long for lower seqs or an epoch change: not sent again.
            let mut error = Error::new(ErrorKind::DeliveryTimeout)
                .with_message(format!(
                    "batch ({} messages) not acknowledged within the delivery timeout of {:?}",
                    batch.messages, self.shared.delivery_timeout
                ))
                .with_url(&self.shared.stream.inner.url);
            if batch.uncertain {
                error = error.with_outcome_unknown();
            }
            self.fail(batch, error);
            return;
        }
        // One retry state per batch, bounded by its delivery deadline rather
        // than a retry count: an outage is ridden out, backing off.
        let mut backoff = batch
            .backoff
            .take()
            .unwrap_or_else(|| Backoff::unbounded(&self.shared.retry).with_deadline(deadline));
        // Each send follows a definite answer (or is the first): its retries
        // start from the initial delay; the deadline stays.
        backoff.reset();
        self.in_flight.push(Box::pin(async move {
            let started = Instant::now();
            // The deadline also bounds an attempt that hangs (a client
            // without request timeout, a stopped server).
            let attempt = inner.send_buffered_retrying(&spec, &mut backoff);
            let result = match tokio::time::timeout_at(deadline.into(), attempt).await {
                Ok(result) => result,
                Err(_) => {
                    backoff.note_outcome_unknown();
                    Err(Error::new(ErrorKind::Timeout)
                        .with_message("an attempt was still running at the delivery deadline"))
                }
            };
            Sent {
                batch,
                epoch,
                spec,
                started,
                backoff,
                result,
            }
        }));
    }

    /// Move to `epoch` (or higher) once the current epoch's requests resolve.
    fn claim(&mut self, epoch: u64) {
        self.pending_epoch = Some(self.pending_epoch.map_or(epoch, |p| p.max(epoch)));
    }

    fn stats(&self, update: impl FnOnce(&mut super::ProducerStats)) {
        update(&mut self.shared.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Resend parked batches whose lower seqs are all acknowledged.
    fn release_parked(&mut self) {
        while let Some(entry) = self.parked.first_entry() {
            if *entry.key() != self.acked_below {
                break;
            }
            let batch = entry.remove();
            self.resend.push_back(batch);
        }
    }

    fn on_restart(&mut self, reply: oneshot::Sender<Result<u64>>) {
        let current = self.pending_epoch.unwrap_or(self.epoch);
        let next = current.max(self.fenced_by.take().unwrap_or(0)) + 1;
        if next > MAX_SAFE_INTEGER {
            let _ = reply.send(Err(Error::invalid_argument(
                "epoch",
                "the producer epoch cannot go beyond 2^53-1",
            )));
            return;
        }
        // A restart is the way out of a failed epoch.
        self.poisoned = None;
        self.shared.lock().poison = None;
        self.pending_epoch = Some(next);
        self.restart_waiters.push(reply);
        self.maybe_switch_epoch();
    }

    /// Start the pending epoch once no request of the old one is in flight,
    /// re-sequencing everything unacknowledged in its original order.
    fn maybe_switch_epoch(&mut self) {
        let Some(epoch) = self.pending_epoch else {
            return;
        };
        if !self.in_flight.is_empty() {
            return;
        }
        let restarted = !self.restart_waiters.is_empty();
        let mut unsent: Vec<SealedBatch> = self.reclaim.drain(..).collect();
        unsent.extend(std::mem::take(&mut self.parked).into_values());
        unsent.extend(self.resend.drain(..));
        unsent.extend(self.queue.drain(..));
        unsent.sort_by_key(|b| b.ordinal);
        let (mut dup_batches, mut dup_messages) = (0u64, 0u64);
        for batch in &mut unsent {
            if batch.uncertain {
                // It may be stored under the old epoch; under the new one
                // the server cannot recognise it.
                dup_batches += 1;
                dup_messages += batch.messages as u64;
            }
            batch.uncertain = false;
            batch.seq = None;
        }
        self.stats(|s| {
            s.possible_duplicate_batches += dup_batches;
            s.possible_duplicate_messages += dup_messages;
            if !restarted {
                s.epochs_claimed += 1;
            }
        });
        if dup_batches > 0 {
            tracing::warn!(
                producer_id = %self.shared.producer_id,
                batches = dup_batches,
                messages = dup_messages,
                "re-sending batches whose outcome was unknown in the old epoch: they may be stored twice"
            );
        }
        self.queue = unsent.into();
        tracing::info!(
            producer_id = %self.shared.producer_id,
            from = self.epoch,
            to = epoch,
            resend = self.queue.len(),
            restarted,
            "producer moved to a new epoch"
        );
        if !restarted {
            crate::telemetry::producer_epoch_claimed(epoch);
        }
        self.epoch = epoch;
        self.next_seq = 0;
        self.established = false;
        self.acked.clear();
        self.acked_below = 0;
        self.pending_epoch = None;
        self.shared.epoch.store(epoch, Ordering::Relaxed);
        self.shared.next_seq.store(0, Ordering::Relaxed);
        for waiter in self.restart_waiters.drain(..) {
            let _ = waiter.send(Ok(epoch));
        }
    }

    fn mark_acked(&mut self, seq: u64) {
        if seq == 0 {
            self.established = true;
        }
        if seq >= self.acked_below {
            self.acked.insert(seq);
        }
        while self.acked.remove(&self.acked_below) {
            self.acked_below += 1;
        }
    }

    /// Give the batch's bytes back to the buffer budget and advance the
    /// resolved watermark that `flush` waits on.
    fn release(&mut self, batch: &SealedBatch) {
        self.shared.budget.release(batch.payload_bytes);
        self.resolved.insert(batch.ordinal);
        let before = self.resolved_below;
        while self.resolved.remove(&self.resolved_below) {
            self.resolved_below += 1;
        }
        if self.resolved_below != before {
            self.shared.resolved.send_replace(self.resolved_below);
        }
    }

    /// Fail a batch. The first failure poisons the epoch: every later batch
    /// would hit a sequence gap, so they fail at once with the same cause
    /// until [`super::Producer::restart`].
    fn fail(&mut self, mut batch: SealedBatch, error: Error) {
        let first = self.poisoned.is_none();
        // This batch may be stored although it failed.
        let own_error = if batch.uncertain && !error.is_outcome_unknown() {
            error.clone().with_outcome_unknown()
        } else {
            error.clone()
        };
        if first {
            tracing::warn!(
                producer_id = %self.shared.producer_id,
                epoch = self.epoch,
                seq = batch.seq,
                error = %error,
                "producer batch failed; appends fail until restart"
            );
            self.poisoned = Some(error.clone());
            let mut state = self.shared.lock();
            state.poison = Some(error.clone());
            if state.first_error.is_none() {
                state.first_error = Some(error.clone());
            }
        }
        crate::telemetry::producer_batch_failed(batch.messages);
        batch.resolve(&Err(own_error.clone()));
        self.release(&batch);
        self.shared.report_failed(FailedBatch {
            error: own_error,
            messages: batch.messages,
            body: batch.body.clone(),
            epoch: self.epoch,
            seq: batch.seq,
        });
        if first {
            let mut rest: Vec<SealedBatch> = self.queue.drain(..).collect();
            rest.extend(self.resend.drain(..));
            rest.extend(std::mem::take(&mut self.parked).into_values());
            rest.append(&mut self.reclaim);
            rest.extend(self.shared.take_sealed());
            for other in rest {
                self.fail(other, error.clone());
            }
        }
    }
}

/// Requests allowed in flight, up to `max_in_flight`, learned like TCP's
/// congestion window with a sequence gap as the loss signal. Requests on
/// different connections can overtake each other on the way to the server,
/// and each overtaking costs a whole re-upload (409, then a resend); on a
/// fast link with large batches pipelining gains little and overtakes
/// often, on a slow one it gains a lot and overtakes rarely. So:
/// - start at 1 and grow by one after as many clean acknowledgements as
///   the window holds, up to a ceiling (at first `max_in_flight`);
/// - on a gap, halve the window and make that the ceiling;
/// - after [`Window::PROBE_AFTER`] clean acknowledgements at the ceiling,
///   raise it by one again (conditions change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    current: usize,
    ceiling: usize,
    max: usize,
    clean_acks: usize,
}

impl Window {
    /// Clean acknowledgements at the ceiling before it is raised again.
    const PROBE_AFTER: usize = 64;

    fn new(max: usize) -> Self {
        Window {
            current: 1,
            ceiling: max,
            max,
            clean_acks: 0,
        }
    }

    fn on_gap(&mut self) {
        self.ceiling = (self.current / 2).max(1);
        self.current = self.ceiling;
        self.clean_acks = 0;
    }

    fn on_ack(&mut self) {
        self.clean_acks += 1;
        if self.current < self.ceiling {
            if self.clean_acks >= self.current {
                self.current += 1;
                self.clean_acks = 0;
            }
        } else if self.ceiling < self.max && self.clean_acks >= Self::PROBE_AFTER {
            self.ceiling += 1;
            self.current = self.ceiling;
            self.clean_acks = 0;
        }
    }
}

struct ExitGuard(Arc<ProducerShared>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.done.cancel();
    }
}

fn closed_error() -> Error {
    Error::new(ErrorKind::ProducerClosed)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
