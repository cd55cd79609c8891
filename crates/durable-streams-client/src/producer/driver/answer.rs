//! Answers to the driver's requests: what one means ([`Driver::classify`]:
//! acknowledged, sequence gap, stale epoch, collision or fatal) and what the
//! driver does about it ([`Driver::on_sent`]: resolve, resend, park, claim
//! a new epoch or fail).

use std::time::Instant;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::{Driver, Sent, closed_error};
use crate::error::{DecodeKind, Error, ErrorKind, Result};
use crate::offset::Offset;
use crate::producer::batch::SealedBatch;
use crate::producer::{MAX_SAFE_INTEGER, Receipt};
use crate::request::{error_from_response, header_is_true, header_str, header_u64, names};

/// What one request attempt's answer means.
enum AttemptOutcome {
    Acked {
        duplicate: bool,
        offset: Option<Offset>,
    },
    Gap(Error),
    /// A duplicate answer to a tuple no attempt of ours could have written.
    Collision,
    Stale {
        current: u64,
        error: Error,
    },
    Fatal(Error),
}

impl Driver {
    fn classify(&self, sent: &Sent) -> AttemptOutcome {
        let url = &self.shared.stream.inner.url;
        let batch = &sent.batch;
        let seq = batch.seq.unwrap_or_default();
        match &sent.result {
            Ok(resp) if resp.status.is_success() => {
                // A close without a body is answered 204 as a matter of course.
                let close_only = batch.close && batch.body.is_empty();
                let duplicate = resp.status == StatusCode::NO_CONTENT && !close_only;
                if let Err(error) =
                    check_echo(&resp.headers, resp.status, sent.epoch, seq, close_only)
                {
                    return AttemptOutcome::Fatal(
                        error.with_status(resp.status.as_u16()).with_url(url),
                    );
                }
                if is_collision(duplicate, batch.uncertain, self.shared.detect_collisions) {
                    return AttemptOutcome::Collision;
                }
                AttemptOutcome::Acked {
                    duplicate,
                    // A missing or unreadable offset is not a failure: the
                    // write is done (PROTOCOL.md 5.2.1 acknowledges by status).
                    offset: header_str(&resp.headers, names::NEXT_OFFSET)
                        .and_then(|v| Offset::from_server(v).ok()),
                }
            }
            Ok(resp) => {
                let error = error_from_response(&sent.spec, resp.status, &resp.headers, &resp.body)
                    .with_url(url);
                match error.kind() {
                    ErrorKind::StaleEpoch { current } => AttemptOutcome::Stale {
                        current: *current,
                        error,
                    },
                    // A closed stream is final, whatever else the answer says.
                    ErrorKind::SequenceGap { .. }
                        if !header_is_true(&resp.headers, names::CLOSED) =>
                    {
                        AttemptOutcome::Gap(error)
                    }
                    // "A new epoch must start at seq 0" for seq > 0: the
                    // server does not know this epoch (any more); judged
                    // like a gap (lost state once seq 0 was acknowledged).
                    ErrorKind::BadRequest if seq > 0 && mentions_epoch(&error) => {
                        AttemptOutcome::Gap(error)
                    }
                    _ => AttemptOutcome::Fatal(error),
                }
            }
            // Retryable failures were retried until the delivery deadline.
            Err(error) if error.is_retryable() => {
                let mut timeout = Error::new(ErrorKind::DeliveryTimeout)
                    .with_message(format!(
                        "batch (epoch {}, seq {seq}, {} messages) not acknowledged within the \
                         delivery timeout of {:?}; last error: {error}",
                        sent.epoch, batch.messages, self.shared.delivery_timeout
                    ))
                    .with_source(error.clone())
                    .with_url(url);
                if batch.uncertain {
                    timeout = timeout.with_outcome_unknown();
                }
                AttemptOutcome::Fatal(timeout)
            }
            Err(error) => AttemptOutcome::Fatal(error.clone()),
        }
    }

    /// Act on an answered (or given up) attempt, then release parked
    /// batches and switch epochs when due.
    pub(super) fn on_sent(&mut self, mut sent: Sent) {
        sent.batch.uncertain |= sent.backoff.take_outcome_unknown();
        let outcome = self.classify(&sent);
        let Sent {
            mut batch,
            epoch,
            started,
            backoff,
            ..
        } = sent;
        batch.backoff = Some(backoff);
        let old_epoch = epoch != self.epoch || self.pending_epoch.is_some();
        match outcome {
            AttemptOutcome::Acked { duplicate, offset } => {
                self.on_acked(batch, epoch, started, duplicate, offset)
            }
            AttemptOutcome::Gap(_) | AttemptOutcome::Stale { .. } | AttemptOutcome::Collision
                if self.poisoned.is_some() =>
            {
                let error = self.poisoned.clone().unwrap_or_else(closed_error);
                self.fail(batch, error);
            }
            AttemptOutcome::Gap(_) | AttemptOutcome::Collision if old_epoch => {
                self.reclaim.push(batch)
            }
            AttemptOutcome::Collision => self.on_collision(batch, epoch),
            AttemptOutcome::Gap(error)
                if state_lost(&error, self.established, batch.sent_after_all_lower_acked) =>
            {
                self.on_state_lost(batch, epoch, error)
            }
            AttemptOutcome::Gap(error) => self.on_gap(batch, error),
            AttemptOutcome::Stale { current, error } => {
                if self.shared.auto_claim && current < MAX_SAFE_INTEGER {
                    self.claim(current + 1);
                    self.reclaim.push(batch);
                } else {
                    self.fenced_by = Some(self.fenced_by.map_or(current, |f| f.max(current)));
                    self.fail(batch, error);
                }
            }
            AttemptOutcome::Fatal(error) => self.fail(batch, error),
        }
        self.release_parked();
        self.maybe_switch_epoch();
    }

    /// The batch is stored (or was already): resolve it with its receipt.
    fn on_acked(
        &mut self,
        mut batch: SealedBatch,
        epoch: u64,
        started: Instant,
        duplicate: bool,
        offset: Option<Offset>,
    ) {
        let seq = batch.seq.unwrap_or_default();
        if epoch == self.epoch {
            self.mark_acked(seq);
        }
        self.window.on_ack();
        if batch.close {
            self.closed_at = Some((epoch, seq));
        }
        if !duplicate && seq == 0 && batch.uncertain {
            // A server without state for this producer (restarted
            // without it) accepts a repeat of seq 0 as new: if the
            // unknown attempt was applied, it is now stored twice.
            self.stats(|s| {
                s.possible_duplicate_batches += 1;
                s.possible_duplicate_messages += batch.messages as u64;
            });
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

    /// Another writer holds this (id, epoch, seq): claim the next epoch
    /// (auto claim) or fail.
    fn on_collision(&mut self, batch: SealedBatch, epoch: u64) {
        let seq = batch.seq.unwrap_or_default();
        self.stats(|s| s.collisions += 1);
        if self.shared.auto_claim && epoch < MAX_SAFE_INTEGER {
            tracing::warn!(
                producer_id = %self.shared.producer_id,
                epoch,
                seq,
                "producer id collision: another writer already used this (id, epoch, seq); claiming the next epoch"
            );
            self.claim(epoch + 1);
            self.reclaim.push(batch);
        } else {
            let error = Error::new(ErrorKind::ProducerIdCollision { epoch, seq })
                .with_status(204)
                .with_message(format!(
                    "the server answered the first attempt of (id {:?}, epoch {epoch}, seq {seq}) \
                     as a duplicate, so it holds another writer's batch under that tuple; \
                     this batch was not stored. Give each run a higher epoch (the default epoch \
                     comes from the clock), use a unique producer id per instance, or enable \
                     auto_claim",
                    self.shared.producer_id
                ))
                .with_url(&self.shared.stream.inner.url);
            self.fail(batch, error);
        }
    }

    /// The server forgot this epoch's state: re-send in a new epoch
    /// (`recover_lost_state`) or fail.
    fn on_state_lost(&mut self, batch: SealedBatch, epoch: u64, error: Error) {
        let seq = batch.seq.unwrap_or_default();
        self.stats(|s| s.state_losses += 1);
        if self.shared.recover_lost_state && epoch < MAX_SAFE_INTEGER {
            tracing::warn!(
                producer_id = %self.shared.producer_id,
                epoch,
                acknowledged_below = self.acked_below,
                error = %error,
                "the server lost this producer's state; claiming the next epoch and re-sending unacknowledged batches"
            );
            self.claim(epoch + 1);
            self.reclaim.push(batch);
        } else {
            let answer = match error.kind() {
                ErrorKind::SequenceGap { expected, received } => {
                    format!("the server expects seq {expected} for seq {received}")
                }
                _ => format!(
                    "the server no longer knows epoch {epoch} (it answered {:?} to seq {seq})",
                    error.message().unwrap_or("400")
                ),
            };
            let error = Error::new(ErrorKind::ProducerStateLost { epoch })
                .with_status(409)
                .with_message(format!(
                    "{answer} although seqs below {} \
                     of this epoch were acknowledged: it forgot them (restarted without durable \
                     producer state?). Acknowledged batches are stored; the unacknowledged ones \
                     fail (those in flight at the loss may have been stored). \
                     recover_lost_state(true) re-sends them in a new epoch instead (those in flight \
                     at the loss may then be stored twice)",
                    self.acked_below
                ))
                .with_url(&self.shared.stream.inner.url);
            self.fail(batch, error);
        }
    }

    /// A sequence gap from requests overtaking each other: resend or park
    /// until the lower seqs are done.
    fn on_gap(&mut self, batch: SealedBatch, error: Error) {
        let seq = batch.seq.unwrap_or_default();
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
}

/// Whether a sequence gap answer means the server forgot this epoch's
/// state: it expects seq 0 although seq 0 was acknowledged (`established`),
/// or it expects less than a seq sent after every lower one was
/// acknowledged. Other gaps are requests overtaking each other.
pub(super) fn state_lost(
    error: &Error,
    established: bool,
    sent_after_all_lower_acked: bool,
) -> bool {
    match error.kind() {
        // Only classified as a gap for seq > 0 (see `classify`).
        ErrorKind::BadRequest => established,
        ErrorKind::SequenceGap { expected, received } => {
            (*expected == 0 && *received > 0 && established)
                || (sent_after_all_lower_acked && expected < received)
        }
        _ => false,
    }
}

/// A duplicate answer is another writer's batch unless an attempt of ours
/// with this tuple may have been applied (PROTOCOL.md 5.2.1: `204` means the
/// server already has `(id, epoch, seq)`).
pub(super) fn is_collision(duplicate: bool, uncertain: bool, detect: bool) -> bool {
    duplicate && !uncertain && detect
}

/// A `400` about the epoch (PROTOCOL.md 5.2.1: an epoch the server sees as
/// new must start at seq 0).
pub(super) fn mentions_epoch(error: &Error) -> bool {
    error
        .message()
        .is_some_and(|m| m.to_ascii_lowercase().contains("epoch"))
}

/// Check the producer headers a server echoes on success (PROTOCOL.md
/// 5.2.1): `Producer-Epoch` is the request's epoch; `Producer-Seq` is the
/// highest accepted seq, so the request's seq on `200` and at least it on a
/// duplicate `204`. Absent headers are not checked (older servers).
pub(super) fn check_echo(
    headers: &HeaderMap,
    status: StatusCode,
    epoch: u64,
    seq: u64,
    close_only: bool,
) -> Result<()> {
    let mismatch = |what: String| {
        Err(Error::decode(
            DecodeKind::Header,
            format!(
                "the server acknowledged producer (epoch {epoch}, seq {seq}) but {what}; \
                 not counted as written"
            ),
        ))
    };
    let echoed_epoch = match header_u64(headers, names::PRODUCER_EPOCH) {
        Ok(v) => v,
        Err(e) => return mismatch(format!("sent an unreadable Producer-Epoch ({e})")),
    };
    if let Some(echoed) = echoed_epoch
        && echoed != epoch
    {
        return mismatch(format!("echoed Producer-Epoch {echoed}"));
    }
    if close_only {
        return Ok(());
    }
    let echoed_seq = match header_u64(headers, names::PRODUCER_SEQ) {
        Ok(v) => v,
        Err(e) => return mismatch(format!("sent an unreadable Producer-Seq ({e})")),
    };
    match echoed_seq {
        Some(echoed) if status == StatusCode::NO_CONTENT && echoed < seq => mismatch(format!(
            "echoed Producer-Seq {echoed} on a duplicate answer"
        )),
        Some(echoed) if status != StatusCode::NO_CONTENT && echoed != seq => {
            mismatch(format!("echoed Producer-Seq {echoed}"))
        }
        _ => Ok(()),
    }
}
