//! The producer's background task: sequencing, pipelining, retries of
//! sequence gaps, epoch changes and failure fan-out.
//!
//! One task owns all sequencing state, so there are no locks around it; the
//! appending side only touches the open batch and the sealed queue in
//! [`Shared::state`]. Requests run as futures polled by this task (the HTTP
//! connections themselves live in the client's pool).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use reqwest::{Method, StatusCode};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::batch::Batch;
use super::{FailedBatch, MAX_SAFE_INTEGER, Receipt, Shared};
use crate::error::{Error, ErrorKind, Result};
use crate::offset::Offset;
use crate::request::{
    BufferedResponse, Idempotency, RequestSpec, error_from_response, header_is_true, header_str,
    names,
};

/// Requests from the [`super::Producer`] handle to its task.
#[derive(Debug)]
pub(crate) enum Control {
    /// Move to the next epoch once the current one's requests resolve; the
    /// reply carries the new epoch.
    Restart(oneshot::Sender<Result<u64>>),
}

/// What one request attempt came back with.
struct Sent {
    batch: Batch,
    epoch: u64,
    spec: RequestSpec,
    started: Instant,
    result: Result<BufferedResponse>,
}

type InFlight = FuturesUnordered<Pin<Box<dyn Future<Output = Sent> + Send>>>;

enum Outcome {
    Acked {
        duplicate: bool,
        offset: Option<Offset>,
    },
    Gap(Error),
    Stale {
        current: u64,
        error: Error,
    },
    Fatal(Error),
}

pub(crate) struct Driver {
    shared: Arc<Shared>,
    control: mpsc::Receiver<Control>,
    cancel: CancellationToken,
    epoch: u64,
    next_seq: u64,
    /// A request of the current epoch was acknowledged; until then only one
    /// request is in flight, because a server that has state for an older
    /// epoch rejects a new epoch's first request unless its seq is 0.
    established: bool,
    /// Sealed batches not yet sent in this epoch, in ordinal order.
    queue: VecDeque<Batch>,
    window: Window,
    /// Batches of this epoch to send again (their earlier seqs are now done).
    resend: VecDeque<Batch>,
    /// Batches answered with a sequence gap, waiting for lower seqs, by seq.
    parked: BTreeMap<u64, Batch>,
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
    reclaim: Vec<Batch>,
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
        shared: Arc<Shared>,
        control: mpsc::Receiver<Control>,
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
                    Some(Control::Restart(reply)) => self.on_restart(reply),
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
            let mut state = self.shared.lock();
            self.queue.extend(state.sealed.drain(..));
            // While requests are backed up, the open batch keeps growing up to
            // its limits: bigger batches under load, like Kafka's accumulator.
            if self.can_send()
                && self.queue.is_empty()
                && self.resend.is_empty()
                && let Some(opened) = state.open.opened_at
            {
                let due = opened + self.shared.linger;
                if Instant::now() >= due {
                    let ordinal = state.take_ordinal();
                    let batch = state.open.seal(ordinal);
                    self.queue.push_back(batch);
                } else {
                    deadline = Some(due);
                }
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

    fn request_for(&self, batch: &Batch, seq: u64) -> Result<RequestSpec> {
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
            spec = spec.header("content-type", &self.shared.content_type)?;
        }
        if batch.close {
            spec = spec.header(names::CLOSED, "true")?;
        }
        Ok(spec)
    }

    fn launch(&mut self, batch: Batch, spec: RequestSpec) {
        let inner = Arc::clone(&self.shared.stream.inner);
        let epoch = self.epoch;
        self.in_flight.push(Box::pin(async move {
            let started = Instant::now();
            let result = inner.send_buffered(&spec).await;
            Sent {
                batch,
                epoch,
                spec,
                started,
                result,
            }
        }));
    }

    fn classify(&self, sent: &Sent) -> Outcome {
        let url = &self.shared.stream.inner.url;
        match &sent.result {
            Ok(resp) if resp.status.is_success() => Outcome::Acked {
                duplicate: resp.status == StatusCode::NO_CONTENT && !sent.batch.close,
                offset: header_str(&resp.headers, names::NEXT_OFFSET)
                    .and_then(|v| Offset::from_server(v).ok()),
            },
            Ok(resp) => {
                let error = error_from_response(&sent.spec, resp.status, &resp.headers, &resp.body)
                    .with_url(url);
                match error.kind() {
                    ErrorKind::StaleEpoch { current } => Outcome::Stale {
                        current: *current,
                        error,
                    },
                    // A closed stream is final, whatever else the answer says.
                    ErrorKind::SequenceGap { .. }
                        if !header_is_true(&resp.headers, names::CLOSED) =>
                    {
                        Outcome::Gap(error)
                    }
                    _ => Outcome::Fatal(error),
                }
            }
            Err(error) => Outcome::Fatal(error.clone()),
        }
    }

    fn on_sent(&mut self, sent: Sent) {
        let outcome = self.classify(&sent);
        let Sent {
            mut batch,
            epoch,
            started,
            ..
        } = sent;
        let seq = batch.seq.unwrap_or_default();
        let old_epoch = epoch != self.epoch || self.pending_epoch.is_some();
        match outcome {
            Outcome::Acked { duplicate, offset } => {
                if epoch == self.epoch {
                    self.mark_acked(seq);
                }
                self.window.on_ack();
                if batch.close {
                    self.closed_at = Some((epoch, seq));
                }
                crate::telemetry::producer_batch_sent(
                    batch.messages,
                    batch.body.len(),
                    started.elapsed(),
                    epoch,
                    seq,
                    duplicate,
                );
                let receipt = Receipt {
                    offset,
                    duplicate,
                    epoch,
                    seq,
                };
                batch.resolve(&Ok(receipt));
                self.release(&batch);
            }
            Outcome::Gap(_) | Outcome::Stale { .. } if self.poisoned.is_some() => {
                let error = self.poisoned.clone().unwrap_or_else(closed_error);
                self.fail(batch, error);
            }
            Outcome::Gap(_) if old_epoch => self.reclaim.push(batch),
            Outcome::Gap(error) => {
                self.window.on_gap();
                if batch.sent_after_all_lower_acked {
                    // Nothing lower was outstanding: the server's state differs
                    // from ours (expired or reset), and resending cannot help.
                    self.fail(batch, error);
                } else if self.acked_below == seq {
                    // The lower seqs were acknowledged meanwhile: it was only
                    // reordering on the way to the server.
                    crate::telemetry::producer_retry("sequence_gap");
                    self.resend.push_back(batch);
                } else {
                    crate::telemetry::producer_retry("sequence_gap");
                    self.parked.insert(seq, batch);
                }
            }
            Outcome::Stale { current, error } => {
                if self.shared.auto_claim && current < MAX_SAFE_INTEGER {
                    let claim = current + 1;
                    self.pending_epoch = Some(self.pending_epoch.map_or(claim, |p| p.max(claim)));
                    self.reclaim.push(batch);
                } else {
                    self.fenced_by = Some(self.fenced_by.map_or(current, |f| f.max(current)));
                    self.fail(batch, error);
                }
            }
            Outcome::Fatal(error) => self.fail(batch, error),
        }
        self.release_parked();
        self.maybe_switch_epoch();
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
        let mut unsent: Vec<Batch> = self.reclaim.drain(..).collect();
        unsent.extend(std::mem::take(&mut self.parked).into_values());
        unsent.extend(self.resend.drain(..));
        unsent.extend(self.queue.drain(..));
        unsent.sort_by_key(|b| b.ordinal);
        for batch in &mut unsent {
            batch.seq = None;
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
    fn release(&mut self, batch: &Batch) {
        self.shared.budget.add_permits(batch.payload_bytes);
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
    fn fail(&mut self, mut batch: Batch, error: Error) {
        let first = self.poisoned.is_none();
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
        batch.resolve(&Err(error.clone()));
        self.release(&batch);
        if let Some(callback) = &self.shared.on_error {
            let failed = FailedBatch {
                error: error.clone(),
                messages: batch.messages,
                body: batch.body.clone(),
                epoch: self.epoch,
                seq: batch.seq,
            };
            let callback = Arc::clone(callback);
            // A panicking callback must not kill the task that owns the data.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(failed))).is_err()
            {
                tracing::error!("producer on_error callback panicked");
            }
        }
        if first {
            let mut rest: Vec<Batch> = self.queue.drain(..).collect();
            rest.extend(self.resend.drain(..));
            rest.extend(std::mem::take(&mut self.parked).into_values());
            rest.append(&mut self.reclaim);
            rest.extend(self.shared.lock().sealed.drain(..));
            for other in rest {
                self.fail(other, error.clone());
            }
        }
    }
}

/// Requests allowed in flight, up to `max_in_flight`. Back to 1 on a
/// sequence gap (requests overtaking each other on different connections;
/// each gap costs a whole re-upload), grown by one after as many clean
/// acknowledgements as the window holds, like TCP's congestion avoidance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    current: usize,
    max: usize,
    clean_acks: usize,
}

impl Window {
    fn new(max: usize) -> Self {
        Window {
            current: max,
            max,
            clean_acks: 0,
        }
    }

    fn on_gap(&mut self) {
        self.current = 1;
        self.clean_acks = 0;
    }

    fn on_ack(&mut self) {
        self.clean_acks += 1;
        if self.clean_acks >= self.current && self.current < self.max {
            self.current += 1;
            self.clean_acks = 0;
        }
    }
}

struct ExitGuard(Arc<Shared>);

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
mod tests {
    use super::Window;

    #[test]
    fn window_drops_on_a_gap_and_grows_back() {
        let mut w = Window::new(5);
        assert_eq!(w.current, 5);
        w.on_ack();
        assert_eq!(w.current, 5, "never above max");
        w.on_gap();
        assert_eq!(w.current, 1);
        // 1 clean ack -> 2, 2 more -> 3, 3 more -> 4, 4 more -> 5.
        let mut acks = 0;
        while w.current < 5 {
            w.on_ack();
            acks += 1;
        }
        assert_eq!(acks, 1 + 2 + 3 + 4);
        w.on_ack();
        assert_eq!(w.current, 5);
    }
}
