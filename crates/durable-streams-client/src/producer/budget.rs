//! The buffer budget: payload bytes appended but not yet resolved, bounded
//! by `max_buffered_bytes`.
//!
//! A semaphore of bytes does the bounding and the fair waiting (a waiter
//! for a large message is not starved by later small ones: once it waits,
//! they can use at most the credit already taken). Appends do
//! not touch it per message: the appender holding the state lock takes
//! bytes from a credit kept in the state, and tops the credit up from the
//! semaphore a chunk at a time. A waiter gives the credit back before it
//! waits, so credit never holds room that a waiter needs. A
//! [`ProducerWriter`](super::ProducerWriter) keeps a credit of its own the
//! same way.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result};

/// Largest credit taken at once: 1/16 of the budget, at most 256 KiB (at
/// 100 B per message, one semaphore operation per 2,600 appends).
const MAX_CHUNK: usize = 256 << 10;

#[derive(Debug)]
pub(crate) struct Budget {
    /// Bytes neither appended nor held as credit.
    free: Semaphore,
    max: usize,
    chunk: usize,
    /// The credit's current size, for [`Budget::unacknowledged`] (written
    /// only by the lock holder: a plain store, no read-modify-write).
    credit_seen: AtomicUsize,
}

/// Bytes taken from the budget but not yet given to a message: the one in
/// the producer's locked state (used by the lock holder), or a writer's.
#[derive(Debug, Default)]
pub(crate) struct Credit(usize);

impl Budget {
    /// `max` must be at most [`Semaphore::MAX_PERMITS`] (the builder checks).
    pub(crate) fn new(max: usize) -> Self {
        Budget {
            free: Semaphore::new(max),
            max,
            chunk: (max / 16).min(MAX_CHUNK),
            credit_seen: AtomicUsize::new(0),
        }
    }

    /// [`Self::take`] for the credit in the producer's locked state, whose
    /// size [`Self::unacknowledged`] leaves out.
    #[inline]
    pub(crate) fn take_shared(&self, credit: &mut Credit, len: usize) -> bool {
        let taken = self.take(credit, len);
        if taken {
            self.credit_seen.store(credit.0, Ordering::Relaxed);
        }
        taken
    }

    /// Take `len` bytes without waiting: from `credit` first, topping it up
    /// from the free bytes (with a chunk to spare when there is room).
    #[inline]
    pub(crate) fn take(&self, credit: &mut Credit, len: usize) -> bool {
        // Inline: most takes come out of the credit (per message, for a
        // writer); topping it up is the rare case.
        if credit.0 < len && !self.top_up(credit, len) {
            return false;
        }
        credit.0 -= len;
        true
    }

    /// Add to `credit` from the free bytes so that it covers `len`: a chunk
    /// to spare when there is room, else all that is free (so that the
    /// next messages do not come back here one by one while less than a
    /// chunk is free), else exactly `len`.
    fn top_up(&self, credit: &mut Credit, len: usize) -> bool {
        let need = len - credit.0;
        let with_spare = need.saturating_add(self.chunk);
        let all_free = self.free.available_permits().clamp(need, with_spare);
        let Some(got) = [with_spare, all_free, need]
            .into_iter()
            .find(|&bytes| self.try_free(bytes))
        else {
            return false;
        };
        credit.0 += got;
        true
    }

    /// Give all of the state's `credit` back to the free bytes (before
    /// waiting for room, so a wait never needs bytes that sit in it).
    pub(crate) fn return_shared(&self, credit: &mut Credit) {
        self.return_credit(credit);
        self.credit_seen.store(0, Ordering::Relaxed);
    }

    /// Give all of `credit` back to the free bytes.
    pub(crate) fn return_credit(&self, credit: &mut Credit) {
        if credit.0 > 0 {
            self.free.add_permits(std::mem::take(&mut credit.0));
        }
    }

    /// Wait until `len` bytes are free and take them; `ProducerClosed` once
    /// `done` is cancelled. Call [`Self::return_credit`] first.
    pub(crate) async fn acquire(&self, len: usize, done: &CancellationToken) -> Result<()> {
        let permits = u32::try_from(len).map_err(|_| {
            Error::invalid_argument(
                "data",
                format!("a {len}-byte message is larger than max_buffered_bytes"),
            )
        })?;
        let acquired = tokio::select! {
            acquired = self.free.acquire_many(permits) => acquired,
            _ = done.cancelled() => return Err(Error::new(ErrorKind::ProducerClosed)),
        };
        acquired
            .map_err(|_| Error::new(ErrorKind::ProducerClosed))?
            .forget();
        Ok(())
    }

    /// Give back the bytes of resolved (or never appended) messages.
    pub(crate) fn release(&self, len: usize) {
        self.free.add_permits(len);
    }

    /// Bytes appended and not yet resolved, plus writers' unused credit (at
    /// most a chunk each). Exact when no append or resolution is under way;
    /// a passing moment's figure otherwise.
    pub(crate) fn unacknowledged(&self) -> usize {
        self.max
            .saturating_sub(self.free.available_permits())
            .saturating_sub(self.credit_seen.load(Ordering::Relaxed))
    }

    fn try_free(&self, bytes: usize) -> bool {
        let Ok(permits) = u32::try_from(bytes) else {
            return false;
        };
        match self.free.try_acquire_many(permits) {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn appends_take_credit_a_chunk_at_a_time_and_never_exceed_the_budget() {
        let budget = Budget::new(1600);
        let mut credit = Credit::default();
        assert!(budget.take_shared(&mut credit, 10));
        // One top-up of 10 + a 100-byte chunk; the credit covers the rest.
        assert_eq!(budget.free.available_permits(), 1490);
        assert_eq!(credit.0, 100);
        assert_eq!(budget.unacknowledged(), 10);
        for _ in 0..10 {
            assert!(budget.take_shared(&mut credit, 10));
        }
        assert_eq!(budget.free.available_permits(), 1490);
        assert_eq!(budget.unacknowledged(), 110);
        // Exactly up to the budget, not one byte more.
        assert!(budget.take_shared(&mut credit, 1490));
        assert_eq!(budget.unacknowledged(), 1600);
        assert!(!budget.take(&mut credit, 1));
        budget.release(1600);
        assert_eq!(budget.unacknowledged(), 0);
        assert!(budget.take(&mut credit, 1600));
        assert!(!budget.take(&mut credit, 1));
    }

    #[test]
    fn with_less_than_a_chunk_free_a_top_up_takes_all_of_it() {
        let budget = Budget::new(1600);
        let mut credit = Credit::default();
        // 1450 and a chunk (100) of credit, used up: 50 free.
        assert!(budget.take(&mut credit, 1450));
        assert!(budget.take(&mut credit, 100));
        assert_eq!((budget.free.available_permits(), credit.0), (50, 0));
        // Less than 10 + a chunk is free: all 50 become credit, and the
        // next four messages take none from the free bytes.
        assert!(budget.take(&mut credit, 10));
        assert_eq!((budget.free.available_permits(), credit.0), (0, 40));
        for _ in 0..4 {
            assert!(budget.take(&mut credit, 10));
        }
        assert!(!budget.take(&mut credit, 1));
    }

    #[test]
    fn a_tiny_budget_takes_exactly_what_is_asked() {
        let budget = Budget::new(10);
        let mut credit = Credit::default();
        assert!(budget.take(&mut credit, 6));
        assert!(!budget.take(&mut credit, 6));
        assert!(budget.take(&mut credit, 4));
        assert_eq!(budget.unacknowledged(), 10);
    }

    proptest::proptest! {
        /// Whatever the appends, releases and credit returns: an append
        /// fits exactly when appended-and-unresolved bytes stay within the
        /// budget, and `unacknowledged` counts exactly those bytes.
        #[test]
        fn credit_never_changes_what_fits(
            max in 1usize..100_000,
            ops in proptest::collection::vec((0u8..3, 1usize..20_000), 1..200),
        ) {
            let budget = Budget::new(max);
            let mut credit = Credit::default();
            let mut outstanding: Vec<usize> = Vec::new();
            for (op, n) in ops {
                match op {
                    0 => {
                        let held: usize = outstanding.iter().sum();
                        let fits = held + n <= max;
                        proptest::prop_assert_eq!(budget.take_shared(&mut credit, n), fits);
                        if fits {
                            outstanding.push(n);
                        }
                    }
                    1 if !outstanding.is_empty() => {
                        let len = outstanding.swap_remove(n % outstanding.len());
                        budget.release(len);
                    }
                    _ => budget.return_shared(&mut credit),
                }
                proptest::prop_assert_eq!(budget.unacknowledged(), outstanding.iter().sum::<usize>());
            }
        }
    }

    #[tokio::test]
    async fn a_waiter_gets_the_returned_credit_and_is_not_overtaken() {
        let budget = std::sync::Arc::new(Budget::new(1600));
        let done = CancellationToken::new();
        let mut credit = Credit::default();
        assert!(budget.take_shared(&mut credit, 1000));
        // 1000 appended, 100 held as credit, 500 free: a 600-byte message
        // fits only once the credit is back.
        budget.return_shared(&mut credit);
        assert_eq!(budget.unacknowledged(), 1000);
        let waiter = {
            let budget = std::sync::Arc::clone(&budget);
            let done = done.clone();
            tokio::spawn(async move { budget.acquire(700, &done).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The queued waiter holds the free bytes: a small append must not
        // take them from under it.
        assert!(!budget.take(&mut credit, 1));
        budget.release(1000);
        waiter.await.unwrap().unwrap();
        assert_eq!(budget.unacknowledged(), 700);
        // Cancellation ends a wait that cannot be served.
        let stuck = {
            let budget = std::sync::Arc::clone(&budget);
            let done = done.clone();
            tokio::spawn(async move { budget.acquire(1600, &done).await })
        };
        done.cancel();
        let err = stuck.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::ProducerClosed);
    }
}
