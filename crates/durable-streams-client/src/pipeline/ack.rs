//! In-order acknowledgement of concurrently processed read chunks.
//!
//! Every read chunk is registered with the number of messages it holds and
//! the offset right after it. Workers complete messages in any order; the
//! tracker pops chunks off the front only while the front chunk has no
//! outstanding message, so the committable offset never passes a message
//! that is still in flight. Only exact offsets are committable: a piece of
//! a large response carries where the response started, and committing it
//! would claim nothing (the checkpoint moves at the response's last piece).

use std::collections::VecDeque;

use crate::offset::Offset;

/// The front of the tracker moved: everything up to `offset` is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Advance {
    /// The offset right after the last finished chunk with an exact
    /// offset; `None` when only pieces without one finished.
    pub(crate) offset: Option<Offset>,
    /// How many chunks were popped.
    pub(crate) chunks: usize,
    /// How many messages those chunks held.
    pub(crate) messages: usize,
}

#[derive(Debug)]
struct Entry<H> {
    remaining: usize,
    messages: usize,
    offset: Offset,
    exact: bool,
    /// Held until the chunk is acknowledged (read-ahead window permits);
    /// dropped when the chunk is popped.
    _hold: H,
}

/// Chunks in read order with their outstanding message counts.
#[derive(Debug)]
pub(crate) struct AckTracker<H = ()> {
    /// Sequence number of `chunks[0]`.
    front_seq: u64,
    chunks: VecDeque<Entry<H>>,
}

impl<H> Default for AckTracker<H> {
    fn default() -> Self {
        AckTracker {
            front_seq: 0,
            chunks: VecDeque::new(),
        }
    }
}

impl<H> AckTracker<H> {
    /// Register the next chunk (holding `messages` messages, ending at
    /// `offset`, an exact resume position or not); returns its sequence
    /// number, and an advance when the chunk is empty and everything before
    /// it was already done.
    pub(crate) fn register(
        &mut self,
        messages: usize,
        offset: Offset,
        exact: bool,
        hold: H,
    ) -> (u64, Option<Advance>) {
        let seq = self.front_seq + self.chunks.len() as u64;
        self.chunks.push_back(Entry {
            remaining: messages,
            messages,
            offset,
            exact,
            _hold: hold,
        });
        let advance = if messages == 0 { self.pop_done() } else { None };
        (seq, advance)
    }

    /// Mark `n` messages of chunk `seq` done. Completing more messages than
    /// a chunk holds, or a chunk that was never registered, is a bug
    /// (debug assertion; ignored in release builds).
    pub(crate) fn complete(&mut self, seq: u64, n: usize) -> Option<Advance> {
        let Some(index) = seq.checked_sub(self.front_seq) else {
            debug_assert!(false, "chunk {seq} was already acknowledged");
            return None;
        };
        let Some(entry) = self.chunks.get_mut(index as usize) else {
            debug_assert!(false, "chunk {seq} was never registered");
            return None;
        };
        debug_assert!(entry.remaining >= n, "chunk {seq} completed too often");
        entry.remaining = entry.remaining.saturating_sub(n);
        if index == 0 && entry.remaining == 0 {
            self.pop_done()
        } else {
            None
        }
    }

    fn pop_done(&mut self) -> Option<Advance> {
        let mut advance: Option<Advance> = None;
        while self.chunks.front().is_some_and(|e| e.remaining == 0) {
            let entry = self.chunks.pop_front().expect("front exists");
            self.front_seq += 1;
            let a = advance.get_or_insert(Advance {
                offset: None,
                chunks: 0,
                messages: 0,
            });
            if entry.exact {
                a.offset = Some(entry.offset);
            }
            a.chunks += 1;
            a.messages += entry.messages;
        }
        advance
    }

    /// Chunks registered and not yet acknowledged.
    #[cfg(test)]
    pub(crate) fn pending_chunks(&self) -> usize {
        self.chunks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn off(n: u64) -> Offset {
        Offset::parse(&format!("{n:016}")).unwrap()
    }

    #[test]
    fn in_order_completion_advances_each_time() {
        let mut t = AckTracker::<()>::default();
        let (a, _) = t.register(2, off(1), true, ());
        let (b, _) = t.register(1, off(2), true, ());
        assert_eq!(t.complete(a, 1), None);
        assert_eq!(t.complete(a, 1).unwrap().offset.unwrap(), off(1));
        let adv = t.complete(b, 1).unwrap();
        assert_eq!(
            (adv.offset.unwrap(), adv.chunks, adv.messages),
            (off(2), 1, 1)
        );
        assert_eq!(t.pending_chunks(), 0);
    }

    #[test]
    fn later_chunk_waits_for_earlier() {
        let mut t = AckTracker::<()>::default();
        let (a, _) = t.register(1, off(1), true, ());
        let (b, _) = t.register(1, off(2), true, ());
        let (c, _) = t.register(1, off(3), true, ());
        assert_eq!(t.complete(c, 1), None);
        assert_eq!(t.complete(b, 1), None);
        let adv = t.complete(a, 1).unwrap();
        assert_eq!(
            (adv.offset.unwrap(), adv.chunks, adv.messages),
            (off(3), 3, 3)
        );
    }

    #[test]
    fn empty_chunks_pass_when_at_front() {
        let mut t = AckTracker::<()>::default();
        let (_, adv) = t.register(0, off(1), true, ());
        assert_eq!(adv.unwrap().offset.unwrap(), off(1));
        let (a, _) = t.register(1, off(2), true, ());
        let (_, adv) = t.register(0, off(3), true, ());
        assert_eq!(adv, None, "an empty chunk behind a pending one waits");
        assert_eq!(t.complete(a, 1).unwrap().offset.unwrap(), off(3));
    }

    #[test]
    fn holds_are_released_on_ack() {
        let held = std::sync::Arc::new(());
        let mut t = AckTracker::default();
        let (a, _) = t.register(1, off(1), true, std::sync::Arc::clone(&held));
        assert_eq!(std::sync::Arc::strong_count(&held), 2);
        t.complete(a, 1);
        assert_eq!(std::sync::Arc::strong_count(&held), 1);
    }

    #[test]
    fn only_exact_offsets_are_committable() {
        let mut t = AckTracker::<()>::default();
        // Two pieces of one large response (offset = where it started),
        // then its last piece with the exact offset.
        let (a, _) = t.register(1, off(1), false, ());
        let (b, _) = t.register(1, off(1), false, ());
        let (c, _) = t.register(1, off(9), true, ());
        let adv = t.complete(a, 1).unwrap();
        assert_eq!((adv.offset, adv.chunks), (None, 1));
        assert_eq!(t.complete(c, 1), None);
        let adv = t.complete(b, 1).unwrap();
        assert_eq!((adv.offset, adv.chunks, adv.messages), (Some(off(9)), 2, 2));
        // An empty inexact chunk at the front commits nothing.
        let (_, adv) = t.register(0, off(9), false, ());
        assert_eq!(adv.unwrap().offset, None);
    }

    proptest! {
        /// Chunks of random sizes, messages completed in a random order: the
        /// committed offset only ever moves forward, never passes an
        /// unfinished message, and ends at the last chunk.
        #[test]
        fn out_of_order_completion_commits_in_offset_order(
            sizes in proptest::collection::vec(0usize..5, 1..40),
            seed in any::<u64>(),
        ) {
            let mut t = AckTracker::<()>::default();
            let mut messages = Vec::new();
            let mut last_committed: Option<u64> = None;
            for (i, &n) in sizes.iter().enumerate() {
                let (seq, adv) = t.register(n, off(i as u64 + 1), true, ());
                prop_assert_eq!(seq, i as u64);
                if let Some(adv) = adv {
                    last_committed = Some(adv.offset.unwrap().as_str().parse().unwrap());
                }
                messages.extend(std::iter::repeat_n(seq, n));
            }
            let mut rng = fastrand::Rng::with_seed(seed);
            rng.shuffle(&mut messages);
            let mut done = vec![0usize; sizes.len()];
            for &seq in &messages {
                done[seq as usize] += 1;
                if let Some(adv) = t.complete(seq, 1) {
                    let committed: u64 = adv.offset.unwrap().as_str().parse().unwrap();
                    prop_assert!(last_committed.is_none_or(|l| committed > l));
                    // Every chunk up to the committed one is fully done.
                    for (i, &n) in sizes.iter().enumerate().take(committed as usize) {
                        prop_assert_eq!(done[i], n, "chunk {} committed early", i);
                    }
                    last_committed = Some(committed);
                }
                // Never stalls: if the first chunk is done, it was popped.
                if let Some(front) = (0..sizes.len()).find(|&i| done[i] < sizes[i]) {
                    prop_assert_eq!(last_committed.unwrap_or(0), front as u64);
                }
            }
            prop_assert_eq!(last_committed, Some(sizes.len() as u64));
            prop_assert_eq!(t.pending_chunks(), 0);
        }
    }
}
