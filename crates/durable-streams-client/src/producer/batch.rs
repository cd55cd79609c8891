//! Batches: the open batch that appends write into, and sealed batches that
//! the driver sends. Pure data; no I/O.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::oneshot;

use super::Receipt;
use crate::error::Result;

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

/// A channel to one `send` caller waiting for its message's receipt.
pub(crate) type Waiter = oneshot::Sender<Result<Receipt>>;

/// The batch currently being filled by appends.
#[derive(Debug)]
pub(crate) struct OpenBatch {
    framing: Framing,
    body: BytesMut,
    messages: usize,
    payload_bytes: usize,
    waiters: Vec<Waiter>,
    /// When the first message arrived; the linger clock starts here.
    pub(crate) opened_at: Option<Instant>,
}

impl OpenBatch {
    pub(crate) fn new(framing: Framing) -> Self {
        OpenBatch {
            framing,
            body: BytesMut::new(),
            messages: 0,
            payload_bytes: 0,
            waiters: Vec::new(),
            opened_at: None,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.messages == 0
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
    /// exactly one JSON value).
    pub(crate) fn push(&mut self, message: &[u8], waiter: Option<Waiter>) {
        if self.messages == 0 {
            self.opened_at = Some(Instant::now());
            if self.framing == Framing::JsonArray {
                self.body.put_u8(b'[');
            }
        } else if self.framing == Framing::JsonArray {
            self.body.put_u8(b',');
        }
        self.body.put_slice(message);
        self.messages += 1;
        self.payload_bytes += message.len();
        if let Some(waiter) = waiter {
            self.waiters.push(waiter);
        }
    }

    /// Close the batch for sending; the open batch starts over empty.
    pub(crate) fn seal(&mut self, ordinal: u64) -> Batch {
        if self.framing == Framing::JsonArray && self.messages > 0 {
            self.body.put_u8(b']');
        }
        let batch = Batch {
            ordinal,
            seq: None,
            body: self.body.split().freeze(),
            messages: self.messages,
            payload_bytes: self.payload_bytes,
            waiters: std::mem::take(&mut self.waiters),
            close: false,
            sent_after_all_lower_acked: false,
        };
        self.messages = 0;
        self.payload_bytes = 0;
        self.opened_at = None;
        batch
    }
}

/// A batch ready to send: one request, one `Producer-Seq`.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Position among all batches of this producer (across epochs).
    pub(crate) ordinal: u64,
    /// The sequence number, assigned when first sent in the current epoch.
    pub(crate) seq: Option<u64>,
    pub(crate) body: Bytes,
    pub(crate) messages: usize,
    /// Bytes reserved from the producer's buffer budget.
    pub(crate) payload_bytes: usize,
    pub(crate) waiters: Vec<Waiter>,
    /// A `Stream-Closed: true` request (close through the producer).
    pub(crate) close: bool,
    /// Every lower sequence was acknowledged when this attempt was sent, so a
    /// sequence gap answer cannot be a reordering race.
    pub(crate) sent_after_all_lower_acked: bool,
}

impl Batch {
    /// A close request carrying an optional final body (already framed).
    pub(crate) fn close(ordinal: u64, body: Bytes, payload_bytes: usize, waiter: Waiter) -> Self {
        Batch {
            ordinal,
            seq: None,
            messages: usize::from(!body.is_empty()),
            body,
            payload_bytes,
            waiters: vec![waiter],
            close: true,
            sent_after_all_lower_acked: false,
        }
    }

    /// Hand the outcome to every waiting `send` caller.
    pub(crate) fn resolve(&mut self, outcome: &Result<Receipt>) {
        for waiter in self.waiters.drain(..) {
            // A caller that dropped its Ack no longer wants the answer.
            let _ = waiter.send(outcome.clone());
        }
    }
}

/// Frame a single message as a whole body (used for a final close message).
pub(crate) fn frame_single(framing: Framing, message: &[u8]) -> Bytes {
    let mut open = OpenBatch::new(framing);
    open.push(message, None);
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
        let mut open = OpenBatch::new(Framing::JsonArray);
        open.push(br#"{"a":1}"#, None);
        open.push(b"[1,2]", None);
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
        let mut open = OpenBatch::new(Framing::Concat);
        open.push(b"ab", None);
        open.push(b"cd", None);
        assert_eq!(&open.seal(0).body[..], b"abcd");
    }

    #[test]
    fn limits() {
        let mut open = OpenBatch::new(Framing::Concat);
        // An oversize message still fits into an empty batch.
        assert!(!open.would_overflow(100, LIMITS));
        open.push(b"12345678", None);
        assert!(!open.is_full(LIMITS));
        assert!(open.would_overflow(3, LIMITS));
        assert!(!open.would_overflow(2, LIMITS));
        open.push(b"90", None);
        assert!(open.is_full(LIMITS));
        let mut by_items = OpenBatch::new(Framing::Concat);
        for _ in 0..3 {
            assert!(!by_items.would_overflow(1, LIMITS));
            by_items.push(b"x", None);
        }
        assert!(by_items.is_full(LIMITS));
        assert!(by_items.would_overflow(1, LIMITS));
    }

    #[test]
    fn waiters_get_the_outcome() {
        let mut open = OpenBatch::new(Framing::Concat);
        let (tx, mut rx) = oneshot::channel();
        open.push(b"x", Some(tx));
        let mut batch = open.seal(0);
        let receipt = Receipt {
            offset: None,
            duplicate: true,
            epoch: 2,
            seq: 5,
        };
        batch.resolve(&Ok(receipt.clone()));
        assert_eq!(rx.try_recv().unwrap().unwrap(), receipt);
    }

    proptest! {
        /// Whatever the split into batches, the server-side flattening of the
        /// bodies gives back every message in order.
        #[test]
        fn json_framing_round_trips(values in prop::collection::vec(any::<i64>(), 1..40), max_items in 1usize..8) {
            let limits = BatchLimits { max_bytes: 1 << 20, max_items: Some(max_items) };
            let mut open = OpenBatch::new(Framing::JsonArray);
            let mut bodies = Vec::new();
            for v in &values {
                let encoded = serde_json::to_vec(v).unwrap();
                if open.would_overflow(encoded.len(), limits) {
                    bodies.push(open.seal(0).body);
                }
                open.push(&encoded, None);
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
