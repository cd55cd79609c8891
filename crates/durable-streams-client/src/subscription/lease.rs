//! A worker's hold on one wake: the lease (renewal time on both clocks,
//! progress to commit, the lost signal) and the heartbeat task that keeps
//! it alive while the handler works.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{DEFAULT_LEASE_TTL, StreamAck, Subscriptions, Wake};
use crate::error::{Error, ErrorKind, SubscriptionErrorCode};
use crate::offset::Offset;
use crate::telemetry::{event_names, subscription_event};

pub(super) fn is_fenced(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Subscription {
            code: SubscriptionErrorCode::Fenced
                | SubscriptionErrorCode::TokenInvalid
                | SubscriptionErrorCode::TokenExpired
                | SubscriptionErrorCode::NotFound
        }
    )
}

/// The lease on one wake: when it was last renewed (on both clocks: the
/// monotonic one stops while a machine sleeps, the wall clock does not) and
/// the progress to commit.
pub(super) struct Lease {
    pub(super) ttl: Duration,
    renewed: Mutex<(Instant, SystemTime)>,
    progress: Mutex<Vec<StreamAck>>,
    pub(super) lost: CancellationToken,
}

impl Lease {
    pub(super) fn new(wake: &Wake) -> Self {
        Lease {
            ttl: wake.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL),
            // The claim's answer was just received; the server's timer
            // started a little earlier, which `lapsed` allows for.
            renewed: Mutex::new((Instant::now(), SystemTime::now())),
            progress: Mutex::new(Vec::new()),
            lost: CancellationToken::new(),
        }
    }

    pub(super) fn record(&self, stream: &str, offset: &Offset) {
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        match progress.iter_mut().find(|a| a.stream == stream) {
            Some(ack) => ack.offset = offset.clone(),
            None => progress.push(StreamAck::new(stream, offset.clone())),
        }
    }

    pub(super) fn progress(&self) -> Vec<StreamAck> {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn renewed(&self, at: (Instant, SystemTime)) {
        *self.renewed.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    /// Whether the lease may have expired on the server: a tenth of it (at
    /// most a second) is kept as margin for the request's own travel time.
    pub(super) fn lapsed(&self) -> bool {
        if self.lost.is_cancelled() {
            return true;
        }
        let margin = (self.ttl / 10).min(Duration::from_secs(1));
        let limit = self.ttl.saturating_sub(margin);
        let (mono, wall) = *self.renewed.lock().unwrap_or_else(|p| p.into_inner());
        mono.elapsed() >= limit || wall.elapsed().is_ok_and(|e| e >= limit)
    }
}

pub(super) struct Heartbeat {
    pub(super) subs: Subscriptions,
    pub(super) wake: Wake,
    pub(super) lease: Arc<Lease>,
    pub(super) every: Duration,
}

impl Heartbeat {
    pub(super) async fn run(self) {
        let id = self.wake.subscription_id.as_str();
        loop {
            // Short ticks notice a lapse (a sleeping machine) soon after waking.
            let deadline = Instant::now() + self.every;
            while Instant::now() < deadline {
                tokio::time::sleep(self.every.min(Duration::from_millis(250))).await;
                if self.lease.lapsed() {
                    self.lease.lost.cancel();
                    return;
                }
            }
            let sent = (Instant::now(), SystemTime::now());
            match self
                .subs
                .ack(&self.wake, &self.lease.progress(), false)
                .await
            {
                Ok(_) => {
                    self.lease.renewed(sent);
                    subscription_event("heartbeat", id);
                    tracing::trace!(event = event_names::SUBSCRIPTION_HEARTBEAT, "heartbeat");
                }
                Err(e) if is_fenced(&e) => {
                    tracing::warn!(event = event_names::SUBSCRIPTION_FENCED, error = %e, "heartbeat fenced");
                    self.lease.lost.cancel();
                    return;
                }
                // Transient: the next tick tries again; the lapse check decides.
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
        }
    }
}
