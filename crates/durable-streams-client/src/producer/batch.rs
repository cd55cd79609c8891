//! Batches: the open batch that appends write into, and sealed batches that
//! the driver sends. Pure data; no I/O.

use std::time::Instant;

use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Notify;

use super::Receipt;
use crate::error::{Error, ErrorKind, Result};
use crate::retry::Backoff;

/// How messages are framed into one request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Byte streams: messages are concatenated.
    Concat,
    /// JSON streams: one array per request, one element per message
    /// (PROTOCOL.md 9.1; the server flattens one level).
    JsonArray,
}

/// Limits that decide when the open batch is full.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    pub(crate) max_bytes: usize,
    pub(crate) max_items: Option<usize>,
}

/// A batch's outcome, shared by the batch and every `send` caller waiting
/// on it (one per batch, not per message: a caller's share costs one
/// reference count).
#[derive(Debug, Default)]
pub(crate) struct OutcomeCell {
    value: OnceLock<Result<Receipt>>,
    resolved: Notify,
}

/// One caller's view of a batch outcome.
pub(crate) type OutcomeReceiver = Arc<OutcomeCell>;

impl OutcomeCell {
    /// The outcome, once the batch is resolved (or dropped unresolved: the
    /// producer stopped).
    pub(crate) async fn wait(&self) -> Result<Receipt> {
        loop {
            let resolved = self.resolved.notified();
            tokio::pin!(resolved);
            // Registered before looking, so a resolution in between wakes it.
            resolved.as_mut().enable();
            if let Some(outcome) = self.value.get() {
                return outcome.clone();
            }
            resolved.await;
        }
    }

    fn set(&self, outcome: Result<Receipt>) {
        // Only the first outcome counts (a batch resolves once).
        let _ = self.value.set(outcome);
        self.resolved.notify_waiters();
    }
}

/// A batch's side of its outcome. Dropped unresolved (the producer
/// stopped), it tells every waiter so.
#[derive(Debug)]
pub(crate) struct BatchOutcome(OutcomeReceiver);

impl BatchOutcome {
    fn new() -> Self {
        BatchOutcome(Arc::new(OutcomeCell::default()))
    }

    fn subscribe(&self) -> OutcomeReceiver {
        Arc::clone(&self.0)
    }
}

impl Drop for BatchOutcome {
    fn drop(&mut self) {
        if self.0.value.get().is_none() {
            self.0.set(Err(Error::new(ErrorKind::ProducerClosed)));
        }
    }
}

/// The batch currently being filled by appends.
#[derive(Debug)]
pub(crate) struct OpenBatch {
    framing: Framing,
    body: BytesMut,
    messages: usize,
    payload_bytes: usize,
    outcome: Option<BatchOutcome>,
    /// When the first message arrived; the linger clock starts here.
    pub(crate) opened_at: Option<Instant>,
    /// Capacity to reserve for the next batch: the last batch's size.
    expected_size: usize,
    /// Never reserve more than a full batch.
    max_reserve: usize,
}

/// A message written into the body but not yet counted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    /// Body length before the separator.
    mark: usize,
    /// Where the message itself starts.
    start: usize,
    /// The message's length.
    pub(crate) len: usize,
}

impl OpenBatch {
    pub(crate) fn new(framing: Framing, max_batch_bytes: usize) -> Self {
        OpenBatch {
            expected_size: 0,
            max_reserve: max_batch_bytes
                .saturating_add(max_batch_bytes / 8)
                .min(16 << 20),
            framing,
            body: BytesMut::new(),
            messages: 0,
            payload_bytes: 0,
            outcome: None,
            opened_at: None,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Messages in the batch.
    pub(crate) fn len(&self) -> usize {
        self.messages
    }

    /// Whether adding a message of `len` bytes would overflow the limits, so
    /// the batch must be sealed first. A message larger than the byte limit
    /// still goes alone into an empty batch.
    pub(crate) fn would_overflow(&self, len: usize, limits: BatchLimits) -> bool {
        if self.messages == 0 {
            return false;
        }
        self.payload_bytes + len > limits.max_bytes
            || limits.max_items.is_some_and(|max| self.messages >= max)
    }

    /// Whether the batch reached a limit and should be sent without waiting
    /// for the linger time.
    pub(crate) fn is_full(&self, limits: BatchLimits) -> bool {
        self.payload_bytes >= limits.max_bytes
            || limits.max_items.is_some_and(|max| self.messages >= max)
    }

    /// Add one encoded message. `message` must be non-empty (and, for JSON,
    /// exactly one JSON value). With `want_outcome`, returns a receiver of
    /// the batch's outcome. The caller checks [`Self::would_overflow`] first.
    #[inline]
    pub(crate) fn push(&mut self, message: &[u8], want_outcome: bool) -> Option<OutcomeReceiver> {
        let written = self.write(|body| {
            body.put_slice(message);
            Ok::<(), std::convert::Infallible>(())
        });
        match written {
            Ok(written) => self.count(written, want_outcome),
            Err(never) => match never {},
        }
    }

    /// Write one message straight into the body with `encode` (no
    /// intermediate buffer). Nothing is kept if `encode` fails. The message
    /// is not counted until [`Self::commit`]; [`Self::rollback`] removes it.
    #[inline]
    pub(crate) fn write<E>(
        &mut self,
        encode: impl FnOnce(&mut BytesMut) -> std::result::Result<(), E>,
    ) -> std::result::Result<Written, E> {
        let mark = self.body.len();
        if self.messages == 0 {
            // Start from the previous batch's size: no repeated regrowth of
            // a batch-sized buffer, no batch-sized allocation for a trickle.
            self.body.reserve(self.expected_size);
            if self.framing == Framing::JsonArray {
                self.body.put_u8(b'[');
            }
        } else if self.framing == Framing::JsonArray {
            self.body.put_u8(b',');
        }
        let start = self.body.len();
        if let Err(e) = encode(&mut self.body) {
            self.body.truncate(mark);
            return Err(e);
        }
        Ok(Written {
            mark,
            start,
            len: self.body.len() - start,
        })
    }

    /// Undo a [`Self::write`].
    pub(crate) fn rollback(&mut self, written: Written) {
        self.body.truncate(written.mark);
    }

    /// Count a written message. If it does not fit the batch's limits, the
    /// batch without it is sealed (with `ordinal()`) and returned, and the
    /// message starts the next batch.
    pub(crate) fn commit(
        &mut self,
        written: Written,
        limits: BatchLimits,
        want_outcome: bool,
        ordinal: impl FnOnce() -> u64,
    ) -> (Option<SealedBatch>, Option<OutcomeReceiver>) {
        if !self.would_overflow(written.len, limits) {
            return (None, self.count(written, want_outcome));
        }
        let message = self.body.split_off(written.start);
        self.body.truncate(written.mark);
        let sealed = self.seal(ordinal());
        (Some(sealed), self.push(&message, want_outcome))
    }

    #[inline]
    fn count(&mut self, written: Written, want_outcome: bool) -> Option<OutcomeReceiver> {
        if self.messages == 0 {
            self.opened_at = Some(Instant::now());
        }
        self.messages += 1;
        self.payload_bytes += written.len;
        want_outcome.then(|| {
            self.outcome
                .get_or_insert_with(BatchOutcome::new)
                .subscribe()
        })
    }

    /// Close the batch for sending; the open batch starts over empty.
    pub(crate) fn seal(&mut self, ordinal: u64) -> SealedBatch {
        if self.framing == Framing::JsonArray && self.messages > 0 {
            self.body.put_u8(b']');
        }
        self.expected_size = self.body.len().min(self.max_reserve);
        let batch = SealedBatch {
            ordinal,
            seq: None,
            body: self.body.split().freeze(),
            messages: self.messages,
            payload_bytes: self.payload_bytes,
            outcome: self.outcome.take(),
            close: false,
            sent_after_all_lower_acked: false,
            uncertain: false,
            first_sent: None,
            backoff: None,
        };
        self.messages = 0;
        self.payload_bytes = 0;
        self.opened_at = None;
        batch
    }
}

/// A batch ready to send: one request, one `Producer-Seq`.
#[derive(Debug)]
pub(crate) struct SealedBatch {
    /// Position among all batches of this producer (across epochs).
    pub(crate) ordinal: u64,
    /// The sequence number, assigned when first sent in the current epoch.
    pub(crate) seq: Option<u64>,
    pub(crate) body: Bytes,
    pub(crate) messages: usize,
    /// Bytes reserved from the producer's buffer budget.
    pub(crate) payload_bytes: usize,
    pub(crate) outcome: Option<BatchOutcome>,
    /// A `Stream-Closed: true` request (close through the producer).
    pub(crate) close: bool,
    /// Every lower sequence was acknowledged when this attempt was sent, so a
    /// sequence gap answer cannot be a reordering race.
    pub(crate) sent_after_all_lower_acked: bool,
    /// An attempt with the current `(epoch, seq)` may have been applied
    /// without this producer seeing a success (broken connection after
    /// sending, timeout, 500/502/504), so a duplicate answer is expected
    /// rather than a sign of another writer. Cleared when the batch gets a
    /// new sequence number in a new epoch.
    pub(crate) uncertain: bool,
    /// When the batch was first sent: its delivery timeout counts from here.
    pub(crate) first_sent: Option<Instant>,
    /// The batch's retry state (deadline: `first_sent + delivery_timeout`).
    pub(crate) backoff: Option<Backoff>,
}

impl SealedBatch {
    /// A batch of one message whose bytes are the whole body (no copy):
    /// a byte-stream message at least as large as a batch, or a close
    /// request (`close`) with an optional final body, already framed.
    pub(crate) fn whole(
        ordinal: u64,
        body: Bytes,
        payload_bytes: usize,
        close: bool,
    ) -> (Self, OutcomeReceiver) {
        let outcome = BatchOutcome::new();
        let receiver = outcome.subscribe();
        let batch = SealedBatch {
            ordinal,
            seq: None,
            messages: usize::from(!body.is_empty()),
            body,
            payload_bytes,
            outcome: Some(outcome),
            close,
            sent_after_all_lower_acked: false,
            uncertain: false,
            first_sent: None,
            backoff: None,
        };
        (batch, receiver)
    }

    /// Hand the outcome to every waiting `send` caller.
    pub(crate) fn resolve(&mut self, outcome: &Result<Receipt>) {
        if let Some(channel) = self.outcome.take() {
            channel.0.set(outcome.clone());
        }
    }
}

/// Frame a single message as a whole body (used for a final close message).
pub(crate) fn frame_single(framing: Framing, message: &[u8]) -> Bytes {
    let mut open = OpenBatch::new(framing, message.len());
    open.push(message, false);
    open.seal(0).body
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: BatchLimits = BatchLimits {
        max_bytes: 10,
        max_items: Some(3),
    };

    #[test]
    fn json_batches_are_arrays() {
        let mut open = OpenBatch::new(Framing::JsonArray, 1 << 20);
        open.push(br#"{"a":1}"#, false);
        open.push(b"[1,2]", false);
        let batch = open.seal(7);
        assert_eq!(&batch.body[..], br#"[{"a":1},[1,2]]"#);
        assert_eq!(batch.messages, 2);
        assert_eq!(batch.payload_bytes, 12);
        assert_eq!(batch.ordinal, 7);
        assert!(open.is_empty());
        assert!(open.opened_at.is_none());
    }

    #[test]
    fn byte_batches_concatenate() {
        let mut open = OpenBatch::new(Framing::Concat, 1 << 20);
        open.push(b"ab", false);
        open.push(b"cd", false);
        assert_eq!(&open.seal(0).body[..], b"abcd");
    }

    #[test]
    fn limits() {
        let mut open = OpenBatch::new(Framing::Concat, 1 << 20);
        // An oversize message still fits into an empty batch.
        assert!(!open.would_overflow(100, LIMITS));
        open.push(b"12345678", false);
        assert!(!open.is_full(LIMITS));
        assert!(open.would_overflow(3, LIMITS));
        assert!(!open.would_overflow(2, LIMITS));
        open.push(b"90", false);
        assert!(open.is_full(LIMITS));
        let mut by_items = OpenBatch::new(Framing::Concat, 1 << 20);
        for _ in 0..3 {
            assert!(!by_items.would_overflow(1, LIMITS));
            by_items.push(b"x", false);
        }
        assert!(by_items.is_full(LIMITS));
        assert!(by_items.would_overflow(1, LIMITS));
    }

    #[test]
    fn waiters_get_the_outcome() {
        let mut open = OpenBatch::new(Framing::Concat, 1 << 20);
        let rx = open.push(b"x", true).unwrap();
        let second = open.push(b"y", true).unwrap();
        let mut batch = open.seal(0);
        let receipt = Receipt {
            offset: None,
            duplicate: true,
            epoch: 2,
            seq: 5,
        };
        batch.resolve(&Ok(receipt.clone()));
        for r in [rx, second] {
            assert_eq!(r.value.get().cloned().unwrap().unwrap(), receipt);
        }
    }

    #[tokio::test]
    async fn waiters_wake_on_the_outcome_and_on_a_dropped_batch() {
        let mut open = OpenBatch::new(Framing::Concat, 1 << 20);
        let rx = open.push(b"x", true).unwrap();
        let mut batch = open.seal(0);
        // Waiting before the batch resolves.
        let waiter = tokio::spawn(async move { rx.wait().await });
        tokio::task::yield_now().await;
        let receipt = Receipt {
            offset: None,
            duplicate: false,
            epoch: 1,
            seq: 0,
        };
        batch.resolve(&Ok(receipt.clone()));
        assert_eq!(waiter.await.unwrap().unwrap(), receipt);
        // A batch dropped unresolved (the producer stopped) ends every wait.
        let rx = open.push(b"y", true).unwrap();
        drop(open.seal(1));
        let err = rx.wait().await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::ProducerClosed);
    }

    #[test]
    fn encoded_messages_that_overflow_start_the_next_batch() {
        let mut open = OpenBatch::new(Framing::JsonArray, 1 << 20);
        let limits = BatchLimits {
            max_bytes: 8,
            max_items: None,
        };
        let w = open
            .write(|b| serde_json::to_writer(b.writer(), &"abc"))
            .unwrap();
        assert_eq!(w.len, 5);
        let (sealed, _) = open.commit(w, limits, false, || 0);
        assert!(sealed.is_none());
        let w = open
            .write(|b| serde_json::to_writer(b.writer(), &"defg"))
            .unwrap();
        let (sealed, rx) = open.commit(w, limits, true, || 9);
        let sealed = sealed.expect("the first batch is sealed");
        assert_eq!((&sealed.body[..], sealed.ordinal), (&br#"["abc"]"#[..], 9));
        assert!(rx.is_some());
        // A failed encode leaves nothing behind; a rollback removes a write.
        let failed = open.write(|_| Err::<(), _>("boom"));
        assert!(failed.is_err());
        let w = open
            .write(|b| serde_json::to_writer(b.writer(), &1))
            .unwrap();
        open.rollback(w);
        assert_eq!(&open.seal(1).body[..], br#"["defg"]"#);
    }

    proptest! {
        /// Whatever the split into batches, the server-side flattening of the
        /// bodies gives back every message in order.
        #[test]
        fn json_framing_round_trips(values in prop::collection::vec(any::<i64>(), 1..40), max_items in 1usize..8) {
            let limits = BatchLimits { max_bytes: 1 << 20, max_items: Some(max_items) };
            let mut open = OpenBatch::new(Framing::JsonArray, 1 << 20);
            let mut bodies = Vec::new();
            for v in &values {
                let encoded = serde_json::to_vec(v).unwrap();
                if open.would_overflow(encoded.len(), limits) {
                    bodies.push(open.seal(0).body);
                }
                open.push(&encoded, false);
            }
            bodies.push(open.seal(0).body);
            let mut back = Vec::new();
            for body in bodies {
                let items: Vec<i64> = serde_json::from_slice(&body).unwrap();
                prop_assert!(items.len() <= max_items);
                back.extend(items);
            }
            prop_assert_eq!(back, values);
        }
    }
}
