//! The one retry engine: the [`RetryPolicy`] schedule (backoff with jitter,
//! `Retry-After` as a minimum) and [`Backoff`], the per-operation state with
//! one budget and one deadline that every loop that waits and tries again
//! uses (request retries, read reconnects, consumer and pipeline
//! reconnects, supervisor restarts, producer resends). Which failures are
//! retried is decided by the caller (the transport classifies responses).

use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};

/// How failed requests are retried and live reads reconnect.
///
/// Delay before retry `n` (0-based) is `initial_delay * multiplier^n`, capped
/// at `max_delay`, then reduced by a random fraction up to `jitter` so that
/// many clients do not retry in lockstep. A server's `Retry-After` is a
/// minimum: the client never retries sooner.
///
/// The fields are readable; build a policy from [`RetryPolicy::default`] or
/// [`RetryPolicy::never`] and the setters of the same names (the struct is
/// `#[non_exhaustive]`, so it cannot be built as a literal outside this crate).
///
/// ```
/// use std::time::Duration;
/// use durable_streams_client::RetryPolicy;
/// let policy = RetryPolicy::default()
///     .max_retries(5)
///     .initial_delay(Duration::from_millis(50))
///     .max_delay(Duration::from_secs(2));
/// assert!(policy.validate().is_ok());
/// assert!(RetryPolicy::default().multiplier(0.5).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retries).
    pub max_retries: u32,
    /// Delay before the first retry.
    pub initial_delay: Duration,
    /// Upper bound of any single delay.
    pub max_delay: Duration,
    /// Growth factor per retry; at least 1.0.
    pub multiplier: f64,
    /// Fraction of each delay that is randomised, in `0.0..=1.0`.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// Set the `max_retries` field.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Set the `initial_delay` field.
    pub fn initial_delay(mut self, d: Duration) -> Self {
        self.initial_delay = d;
        self
    }

    /// Set the `max_delay` field.
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Set the `multiplier` field.
    pub fn multiplier(mut self, m: f64) -> Self {
        self.multiplier = m;
        self
    }

    /// Set the `jitter` field.
    pub fn jitter(mut self, j: f64) -> Self {
        self.jitter = j;
        self
    }

    /// Check the settings; the error names the offending field.
    pub fn validate(&self) -> Result<()> {
        // A zero delay would let a loop retry as fast as the server answers.
        if self.initial_delay.is_zero() {
            return Err(Error::invalid_argument(
                "initial_delay",
                "must be greater than zero (a zero delay would hammer the server)",
            ));
        }
        if self.max_delay.is_zero() {
            return Err(Error::invalid_argument(
                "max_delay",
                "must be greater than zero (a zero delay would hammer the server)",
            ));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(Error::invalid_argument(
                "multiplier",
                format!("must be a finite number >= 1.0, got {}", self.multiplier),
            ));
        }
        if !(self.jitter.is_finite() && (0.0..=1.0).contains(&self.jitter)) {
            return Err(Error::invalid_argument(
                "jitter",
                format!("must be within 0.0..=1.0, got {}", self.jitter),
            ));
        }
        if self.max_delay < self.initial_delay {
            return Err(Error::invalid_argument(
                "max_delay",
                format!(
                    "must not be below initial_delay ({:?} < {:?})",
                    self.max_delay, self.initial_delay
                ),
            ));
        }
        Ok(())
    }

    /// The delay before retry number `retry` (0 for the first retry), with jitter.
    pub fn delay(&self, retry: u32) -> Duration {
        let base = self.delay_without_jitter(retry);
        if self.jitter <= 0.0 {
            return base;
        }
        let cut = base.as_secs_f64() * self.jitter * fastrand::f64();
        base.saturating_sub(Duration::from_secs_f64(cut))
    }

    fn delay_without_jitter(&self, retry: u32) -> Duration {
        let factor = self.multiplier.powi(retry.min(64) as i32);
        let secs = self.initial_delay.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.max_delay.as_secs_f64() {
            self.max_delay
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The wait before retry `retry`, honouring the server's `Retry-After` as a minimum.
    pub(crate) fn wait(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self.delay(retry);
        match retry_after {
            Some(min) if min > backoff => min,
            _ => backoff,
        }
    }
}

/// One operation's retry state: the policy's schedule, one budget of
/// retries and an optional deadline. Progress resets the schedule (a live
/// read that delivered data starts backing off from the initial delay
/// again); nothing nests, so an operation never takes more than its budget.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    /// Retries taken since the last reset.
    retries: u32,
    /// At most this many retries; `None` for loops that ride out outages of
    /// any length (live reads, consumers), whose delay is still capped.
    budget: Option<u32>,
    deadline: Option<Instant>,
    /// An attempt of this operation may have been applied although no
    /// success was seen (broken connection after sending, timeout, 5xx other
    /// than 503): set by the transport, read by the idempotent producer.
    outcome_unknown: bool,
}

impl Backoff {
    /// At most `policy.max_retries` retries.
    pub(crate) fn new(policy: &RetryPolicy) -> Self {
        Backoff {
            policy: policy.clone(),
            retries: 0,
            budget: Some(policy.max_retries),
            deadline: None,
            outcome_unknown: false,
        }
    }

    /// No retry budget: retries go on (at most `max_delay` apart) until a
    /// deadline, if one is set, or until the caller stops.
    pub(crate) fn unbounded(policy: &RetryPolicy) -> Self {
        Backoff {
            budget: None,
            ..Backoff::new(policy)
        }
    }

    /// No retry starts after `at`.
    pub(crate) fn with_deadline(mut self, at: Instant) -> Self {
        self.deadline = Some(at);
        self
    }

    /// Record that an attempt may have been applied without a success
    /// answer (see [`Backoff::take_outcome_unknown`]).
    pub(crate) fn note_outcome_unknown(&mut self) {
        self.outcome_unknown = true;
    }

    /// Whether an attempt since the last call may have been applied without
    /// a success answer; clears the record. Not cleared by [`Backoff::reset`].
    pub(crate) fn take_outcome_unknown(&mut self) -> bool {
        std::mem::take(&mut self.outcome_unknown)
    }

    /// Retries taken since the last reset.
    pub(crate) fn retries(&self) -> u32 {
        self.retries
    }

    /// The operation made progress: the next failure waits the initial
    /// delay again and the budget is whole again.
    pub(crate) fn reset(&mut self) {
        self.retries = 0;
    }

    /// The wait before the next try (counted as one retry), or `None` when
    /// the budget is spent or the wait would end past the deadline.
    pub(crate) fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.budget.is_some_and(|budget| self.retries >= budget) {
            return None;
        }
        let wait = self.policy.wait(self.retries, retry_after);
        if let Some(deadline) = self.deadline
            && Instant::now() + wait > deadline
        {
            return None;
        }
        self.retries = self.retries.saturating_add(1);
        Some(wait)
    }

    /// Sleep before the next try; `false` (without sleeping) when the budget
    /// or the deadline is spent.
    pub(crate) async fn wait(&mut self, retry_after: Option<Duration>) -> bool {
        match self.next_delay(retry_after) {
            Some(wait) => {
                tokio::time::sleep(wait).await;
                true
            }
            None => false,
        }
    }
}

/// Longest wait a `Retry-After` can impose: a bad or hostile header must not
/// park a client for hours.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Parse `Retry-After`: delta-seconds or an HTTP-date. A date is judged
/// against the response's own `Date` header when it has one (the local
/// clock may be wrong or have jumped), else against the local clock. Past
/// dates give zero; values are capped at [`MAX_RETRY_AFTER`].
pub(crate) fn parse_retry_after_at(value: &str, date: Option<&str>) -> Option<Duration> {
    let value = value.trim();
    if value.parse::<f64>().is_ok() {
        return parse_retry_after(value);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let now = date
        .and_then(|d| httpdate::parse_http_date(d.trim()).ok())
        .unwrap_or_else(SystemTime::now);
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// Parse `Retry-After` against the local clock; see [`parse_retry_after_at`].
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    const CAP: Duration = MAX_RETRY_AFTER;
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(CAP));
    }
    if let Ok(secs) = value.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_secs_f64(secs.min(CAP.as_secs_f64())));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(CAP),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn validation_names_fields() {
        let err = RetryPolicy::default()
            .initial_delay(Duration::from_secs(5))
            .max_delay(Duration::from_secs(1))
            .validate()
            .unwrap_err();
        assert_eq!(
            err.kind(),
            &crate::ErrorKind::InvalidArgument { field: "max_delay" }
        );
        let err = RetryPolicy::default().jitter(1.5).validate().unwrap_err();
        assert_eq!(
            err.kind(),
            &crate::ErrorKind::InvalidArgument { field: "jitter" }
        );
        let err = RetryPolicy::default()
            .multiplier(f64::NAN)
            .validate()
            .unwrap_err();
        assert_eq!(
            err.kind(),
            &crate::ErrorKind::InvalidArgument {
                field: "multiplier"
            }
        );
    }

    #[test]
    fn delays_grow_and_cap() {
        let p = RetryPolicy::default().jitter(0.0);
        assert_eq!(p.delay(0), Duration::from_millis(100));
        assert_eq!(p.delay(1), Duration::from_millis(200));
        assert_eq!(p.delay(3), Duration::from_millis(800));
        assert_eq!(p.delay(60), Duration::from_secs(30));
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn retry_after_is_a_minimum() {
        let p = RetryPolicy::default().jitter(0.0);
        assert_eq!(
            p.wait(0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            p.wait(0, Some(Duration::from_millis(1))),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn retry_after_formats() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("99999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let d = parse_retry_after(&future).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-4"), None);
    }

    #[test]
    fn retry_after_dates_use_the_response_date() {
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let later = "Wed, 21 Oct 2015 07:28:30 GMT";
        // The local clock is years ahead of the server's: judged by `Date`.
        assert_eq!(
            parse_retry_after_at(later, Some(date)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after_at(later, None), Some(Duration::ZERO));
        let far = "Wed, 21 Oct 2015 09:28:00 GMT";
        assert_eq!(parse_retry_after_at(far, Some(date)), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after_at("7", Some(date)),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn zero_delays_are_rejected() {
        let err = RetryPolicy::default()
            .initial_delay(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert_eq!(
            err.kind(),
            &crate::ErrorKind::InvalidArgument {
                field: "initial_delay"
            }
        );
        let err = RetryPolicy::default()
            .initial_delay(Duration::ZERO)
            .max_delay(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(matches!(
            err.kind(),
            crate::ErrorKind::InvalidArgument { .. }
        ));
    }

    #[test]
    fn backoff_has_one_budget_and_resets_on_progress() {
        let policy = RetryPolicy::default().max_retries(2).jitter(0.0);
        let mut b = Backoff::new(&policy);
        assert_eq!(b.next_delay(None), Some(Duration::from_millis(100)));
        assert_eq!(b.next_delay(None), Some(Duration::from_millis(200)));
        assert_eq!(b.next_delay(None), None, "budget spent");
        b.reset();
        assert_eq!(b.next_delay(None), Some(Duration::from_millis(100)));
        let mut u = Backoff::unbounded(&policy);
        for _ in 0..100 {
            assert!(u.next_delay(None).unwrap() <= policy.max_delay);
        }
        assert_eq!(u.retries(), 100);
        let mut d = Backoff::unbounded(&policy).with_deadline(Instant::now());
        assert_eq!(d.next_delay(None), None, "past the deadline");
    }

    #[test]
    fn an_unknown_outcome_is_reported_once_and_survives_resets() {
        let mut b = Backoff::unbounded(&RetryPolicy::default());
        assert!(!b.take_outcome_unknown());
        b.note_outcome_unknown();
        b.reset();
        assert!(b.take_outcome_unknown());
        assert!(!b.take_outcome_unknown(), "taken");
    }

    proptest! {
        #[test]
        fn jittered_delay_stays_within_bounds(retry in 0u32..100, jitter in 0.0f64..=1.0) {
            let p = RetryPolicy::default().jitter(jitter);
            let d = p.delay(retry);
            let full = p.delay_without_jitter(retry);
            prop_assert!(d <= full);
            prop_assert!(d.as_secs_f64() >= full.as_secs_f64() * (1.0 - jitter) - 1e-9);
        }
    }
}
