//! The read path's pure decisions, kept apart from the I/O so they can be
//! tested directly: offsets only move forward, answers that do not move a
//! read forward are counted (and backed off from) until a bound, SSE
//! connections that end quickly are noticed, and a wall-clock jump (laptop
//! sleep, VM pause) is detected against the monotonic clock.

use std::time::{Duration, Instant, SystemTime};

use crate::error::{DecodeKind, Error, ErrorKind, Result};
use crate::offset::Offset;

/// Default bound of answers in a row that do not move a read forward.
pub(crate) const DEFAULT_MAX_NO_PROGRESS: u32 = 10;

/// Default maximum age of one SSE connection before the read reconnects.
pub(crate) const DEFAULT_SSE_MAX_AGE: Duration = Duration::from_secs(600);

/// A long-poll answer without data that arrives sooner than this with an
/// unchanged cursor was not held by the server (a cache replaying it, or a
/// proxy answering for it).
pub(crate) const LONG_POLL_EARLY: Duration = Duration::from_secs(1);

/// A long-poll answer without data this quick is suspicious whatever its
/// cursor: no server holds a long-poll for so short a time.
pub(crate) const LONG_POLL_INSTANT: Duration = Duration::from_millis(50);

/// An SSE connection that ends sooner than this is short (a proxy cutting
/// it, not the server's periodic close).
pub(crate) const SSE_SHORT: Duration = Duration::from_secs(1);

/// Short SSE connections in a row after which auto mode long-polls instead.
pub(crate) const AUTO_SSE_MAX_SHORT: u32 = 3;

/// A difference between wall-clock and monotonic elapsed time larger than
/// this means the machine slept or was paused: sockets may be dead.
pub(crate) const CLOCK_JUMP: Duration = Duration::from_secs(5);

/// How often a waiting live read checks the clocks.
pub(crate) const CLOCK_CHECK: Duration = Duration::from_secs(2);

/// Check that a server's next offset moves the read forward from `current`.
/// `Ok(true)`: it moved; `Ok(false)`: unchanged (allowed only without data).
/// From the start and `now` sentinels any server offset is forward (servers
/// never return the sentinels).
pub(crate) fn check_forward(current: &Offset, next: &Offset, has_data: bool) -> Result<bool> {
    if current.is_start() || current.is_now() {
        return Ok(true);
    }
    if next > current {
        return Ok(true);
    }
    if next < current {
        return Err(Error::decode(
            DecodeKind::Offset,
            format!(
                "the server's next offset {next} is behind the current offset {current} \
                 (offsets must only move forward)"
            ),
        ));
    }
    if has_data {
        return Err(Error::decode(
            DecodeKind::Offset,
            format!(
                "data arrived with an unchanged offset: next offset {next} equals the \
                 current offset {current}"
            ),
        ));
    }
    Ok(false)
}

/// Whether a checkpoint may move from `committed` to `next`: only forward.
pub(crate) fn checkpoint_moves(committed: Option<&Offset>, next: &Offset) -> bool {
    match committed {
        None => true,
        Some(c) if c.is_start() || c.is_now() => !(next.is_start() || next.is_now()),
        Some(c) => next > c,
    }
}

/// A catch-up answer stalls when it repeats the offset without data and
/// without saying the reader is up to date (or the stream closed).
pub(crate) fn catch_up_stalled(
    moved: bool,
    has_data: bool,
    up_to_date: bool,
    closed: bool,
) -> bool {
    !moved && !has_data && !up_to_date && !closed
}

/// A long-poll answer stalls when it brings nothing (no data, offset
/// unchanged, stream open) and was not held by a server: it came back early
/// with the cursor the request carried, or almost at once.
pub(crate) fn long_poll_stalled(
    moved: bool,
    has_data: bool,
    closed: bool,
    elapsed: Duration,
    sent_cursor: Option<&str>,
    got_cursor: Option<&str>,
) -> bool {
    if moved || has_data || closed {
        return false;
    }
    let same_cursor = got_cursor.is_none() || got_cursor == sent_cursor;
    elapsed < LONG_POLL_INSTANT || (elapsed < LONG_POLL_EARLY && same_cursor)
}

/// How an SSE connection that ended (stream still open) is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SseEnd {
    /// It lasted (the server's periodic close, a max-age reconnect) or
    /// delivered data: reconnect at once.
    Healthy,
    /// Short, but it moved the read forward: reconnect at once, counted
    /// as short for auto mode.
    ShortWithProgress,
    /// Short and nothing moved: back off and count it.
    Stalled,
}

/// Judge an SSE connection by its age and whether it moved the offset.
pub(crate) fn sse_end(age: Duration, moved: bool) -> SseEnd {
    match (age < SSE_SHORT, moved) {
        (false, _) => SseEnd::Healthy,
        (true, true) => SseEnd::ShortWithProgress,
        (true, false) => SseEnd::Stalled,
    }
}

/// Counts answers in a row that did not move a read forward.
#[derive(Debug, Clone)]
pub(crate) struct ProgressGuard {
    limit: u32,
    strikes: u32,
}

impl ProgressGuard {
    pub(crate) fn new(limit: u32) -> Self {
        ProgressGuard {
            limit: limit.max(1),
            strikes: 0,
        }
    }

    /// The read moved forward (or got a healthy answer).
    pub(crate) fn progress(&mut self) {
        self.strikes = 0;
    }

    /// One more answer without progress; `Err(NoProgress)` once the bound
    /// is reached.
    pub(crate) fn stall(&mut self, what: &str) -> Result<()> {
        self.strikes = self.strikes.saturating_add(1);
        if self.strikes >= self.limit {
            return Err(self.give_up(what));
        }
        Ok(())
    }

    /// The error for a read that gives up now.
    pub(crate) fn give_up(&self, what: &str) -> Error {
        Error::new(ErrorKind::NoProgress {
            attempts: self.strikes,
        })
        .with_message(format!(
            "{} {what} in a row did not move the read forward (a cache or proxy may be \
             replaying or cutting answers); gave up",
            self.strikes
        ))
    }

    /// Answers in a row without progress.
    pub(crate) fn strikes(&self) -> u32 {
        self.strikes
    }

    /// Requests after a repeat carry a cache-busting query parameter.
    pub(crate) fn bust_cache(&self) -> bool {
        self.strikes > 0
    }
}

/// Watches the wall clock against the monotonic clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClockWatch {
    wall: SystemTime,
    mono: Instant,
}

impl ClockWatch {
    pub(crate) fn new() -> Self {
        ClockWatch::at(SystemTime::now(), Instant::now())
    }

    pub(crate) fn at(wall: SystemTime, mono: Instant) -> Self {
        ClockWatch { wall, mono }
    }

    /// Compare against the clocks now; see [`ClockWatch::jumped_at`].
    pub(crate) fn jumped(&mut self) -> bool {
        self.jumped_at(SystemTime::now(), Instant::now())
    }

    /// Whether the wall clock moved more than [`CLOCK_JUMP`] apart from the
    /// monotonic clock since the last check (either way); the baseline
    /// moves to `now` in any case.
    pub(crate) fn jumped_at(&mut self, wall: SystemTime, mono: Instant) -> bool {
        let mono_elapsed = mono.saturating_duration_since(self.mono);
        let jumped = match wall.duration_since(self.wall) {
            Ok(wall_elapsed) => wall_elapsed.abs_diff(mono_elapsed) > CLOCK_JUMP,
            // The wall clock went backwards.
            Err(back) => back.duration() + mono_elapsed > CLOCK_JUMP,
        };
        self.wall = wall;
        self.mono = mono;
        jumped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off(s: &str) -> Offset {
        Offset::parse(s).unwrap()
    }

    #[test]
    fn offsets_only_move_forward() {
        assert!(check_forward(&off("0001"), &off("0002"), true).unwrap());
        assert!(check_forward(&off("0001"), &off("0002"), false).unwrap());
        assert!(!check_forward(&off("0002"), &off("0002"), false).unwrap());
        let e = check_forward(&off("0002"), &off("0001"), false).unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Offset));
        assert!(e.to_string().contains("0001") && e.to_string().contains("0002"));
        let e = check_forward(&off("0002"), &off("0002"), true).unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Offset));
        assert!(e.to_string().contains("unchanged"), "{e}");
        // Byte-wise, not numeric.
        assert!(check_forward(&off("9"), &off("10"), true).is_err());
        // From the sentinels any server offset is forward.
        for sentinel in [Offset::start(), Offset::now()] {
            assert!(check_forward(&sentinel, &off("0000"), true).unwrap());
            assert!(check_forward(&sentinel, &off("0000"), false).unwrap());
        }
    }

    #[test]
    fn checkpoints_never_move_backwards() {
        assert!(checkpoint_moves(None, &off("0001")));
        assert!(checkpoint_moves(Some(&off("0001")), &off("0002")));
        assert!(!checkpoint_moves(Some(&off("0002")), &off("0002")));
        assert!(!checkpoint_moves(Some(&off("0002")), &off("0001")));
        assert!(checkpoint_moves(Some(&Offset::start()), &off("0001")));
        assert!(!checkpoint_moves(Some(&off("0001")), &Offset::start()));
        assert!(!checkpoint_moves(Some(&Offset::start()), &Offset::now()));
    }

    #[test]
    fn catch_up_repeats_without_up_to_date_stall() {
        assert!(catch_up_stalled(false, false, false, false));
        assert!(!catch_up_stalled(true, false, false, false));
        assert!(!catch_up_stalled(false, true, false, false));
        assert!(!catch_up_stalled(false, false, true, false));
        assert!(!catch_up_stalled(false, false, false, true));
    }

    #[test]
    fn healthy_long_polls_never_stall() {
        let ms = Duration::from_millis;
        // Held for the server's timeout, new cursor: healthy.
        assert!(!long_poll_stalled(
            false,
            false,
            false,
            Duration::from_secs(20),
            Some("1"),
            Some("2")
        ));
        // Held 20 s even with the same cursor: the server held it.
        assert!(!long_poll_stalled(
            false,
            false,
            false,
            Duration::from_secs(20),
            Some("1"),
            Some("1")
        ));
        // A short server hold (500 ms) with an advanced cursor: healthy.
        assert!(!long_poll_stalled(
            false,
            false,
            false,
            ms(500),
            Some("1"),
            Some("2")
        ));
        // Data, a moved offset or closure are progress.
        assert!(!long_poll_stalled(
            false,
            true,
            false,
            ms(1),
            Some("1"),
            Some("1")
        ));
        assert!(!long_poll_stalled(
            true,
            false,
            false,
            ms(1),
            Some("1"),
            Some("1")
        ));
        assert!(!long_poll_stalled(
            false,
            false,
            true,
            ms(1),
            Some("1"),
            None
        ));
    }

    #[test]
    fn replayed_or_instant_long_polls_stall() {
        let ms = Duration::from_millis;
        assert!(long_poll_stalled(
            false,
            false,
            false,
            ms(3),
            Some("1"),
            Some("1")
        ));
        assert!(long_poll_stalled(
            false,
            false,
            false,
            ms(900),
            Some("7"),
            Some("7")
        ));
        assert!(long_poll_stalled(false, false, false, ms(900), None, None));
        // Almost at once, even with a new cursor.
        assert!(long_poll_stalled(
            false,
            false,
            false,
            ms(2),
            Some("1"),
            Some("2")
        ));
    }

    #[test]
    fn sse_connections_are_judged_by_age_and_progress() {
        let ms = Duration::from_millis;
        assert_eq!(sse_end(ms(50), false), SseEnd::Stalled);
        assert_eq!(sse_end(ms(50), true), SseEnd::ShortWithProgress);
        assert_eq!(sse_end(Duration::from_secs(60), false), SseEnd::Healthy);
        assert_eq!(sse_end(Duration::from_secs(2), true), SseEnd::Healthy);
    }

    #[test]
    fn guard_counts_in_a_row_and_gives_up_at_the_bound() {
        let mut g = ProgressGuard::new(3);
        assert!(!g.bust_cache());
        g.stall("answers").unwrap();
        assert!(g.bust_cache());
        g.stall("answers").unwrap();
        g.progress();
        assert_eq!(g.strikes(), 0);
        g.stall("answers").unwrap();
        g.stall("answers").unwrap();
        let e = g.stall("answers").unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::NoProgress { attempts: 3 });
        assert!(
            ProgressGuard::new(0).stall("x").is_err(),
            "a zero bound is one"
        );
    }

    #[test]
    fn clock_jumps_are_detected_both_ways() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mono = Instant::now();
        let mut w = ClockWatch::at(wall, mono);
        // Both clocks moved alike.
        assert!(!w.jumped_at(wall + Duration::from_secs(2), mono + Duration::from_secs(2)));
        // Small drift is fine.
        assert!(!w.jumped_at(wall + Duration::from_secs(5), mono + Duration::from_secs(4)));
        // Slept an hour: the wall clock moved, the monotonic clock did not.
        assert!(w.jumped_at(
            wall + Duration::from_secs(3605),
            mono + Duration::from_secs(6)
        ));
        // The baseline moved: no second report.
        assert!(!w.jumped_at(
            wall + Duration::from_secs(3607),
            mono + Duration::from_secs(8)
        ));
        // The wall clock set back.
        assert!(w.jumped_at(
            wall + Duration::from_secs(3000),
            mono + Duration::from_secs(9)
        ));
    }
}
