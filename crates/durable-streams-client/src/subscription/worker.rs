//! The pull-wake worker: tail the wake stream, claim, process each pending
//! stream with the consumer [`Handler`], heartbeat, ack, release.
//!
//! One file on purpose: the run loop, claim, per-stream processing and
//! finish are one state machine whose order of steps is the guarantee.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{Stream as FuturesStream, StreamExt};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::lease::{Heartbeat, Lease, is_fenced};
use super::{Claim, PendingStream, Subscriptions, Wake};
use crate::codec::{Codec, Framed};
use crate::consumer::{
    Batch, ErrorAction, Flow, Format, FormatSettings, Frames, Handler, resolve_format,
};
use crate::error::{Error, ErrorKind, Result};
use crate::offset::Offset;
use crate::read::{Chunk, LiveMode, Session};
use crate::retry::{Backoff, RetryPolicy};
use crate::runtime::{OnDrop, TaskHandle, catch_panic, default_retry_policy};
use crate::stream::Stream;
use crate::telemetry::{event_names, subscription_event};

/// A pull-wake worker of one or more subscriptions.
///
/// ```no_run
/// # async fn demo() -> durable_streams_client::Result<()> {
/// use durable_streams_client::Client;
/// use durable_streams_client::consumer::{Batch, Flow, Handler, Json};
/// use durable_streams_client::subscription::Worker;
///
/// struct Print;
/// impl Handler for Print {
///     type Format = Json<serde_json::Value>;
///     async fn handle_batch(&mut self, batch: &Batch<serde_json::Value>) -> durable_streams_client::Result<Flow> {
///         for event in &batch.items {
///             println!("{}: {event}", batch.stream);
///         }
///         Ok(Flow::Continue)
///     }
/// }
///
/// let subs = Client::new().subscriptions("http://127.0.0.1:4437")?;
/// let worker = Worker::builder(&subs, Print)
///     .subscriptions(["orders-0", "orders-1"])
///     .wake_stream("wake/orders")
///     .name("host-a")
///     .start()
///     .await?;
/// tokio::signal::ctrl_c().await.ok();
/// worker.shutdown().await?; // finishes the batch in hand, acks it, releases
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Worker;

impl Worker {
    /// Configure a worker that hands batches to `handler`.
    pub fn builder<H: Handler>(subscriptions: &Subscriptions, handler: H) -> WorkerBuilder<H> {
        WorkerBuilder {
            subs: subscriptions.clone(),
            ids: Vec::new(),
            wake_stream: None,
            name: None,
            handler,
            live: LiveMode::Auto,
            heartbeat: None,
            retry: default_retry_policy(),
            resweep: Duration::from_secs(60),
            format: None,
        }
    }
}

/// Configures a [`Worker`]; see [`Worker::builder`].
pub struct WorkerBuilder<H: Handler> {
    subs: Subscriptions,
    ids: Vec<String>,
    wake_stream: Option<String>,
    name: Option<String>,
    handler: H,
    live: LiveMode,
    heartbeat: Option<Duration>,
    retry: RetryPolicy,
    resweep: Duration,
    format: Option<FormatSettings<H>>,
}

impl<H: Handler> fmt::Debug for WorkerBuilder<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("subscriptions", &self.ids)
            .field("wake_stream", &self.wake_stream)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> WorkerBuilder<H> {
    /// Serve subscription `id` (call again, or use
    /// [`subscriptions`](Self::subscriptions), for several).
    pub fn subscription(mut self, id: impl Into<String>) -> Self {
        self.ids.push(id.into());
        self
    }

    /// Serve every subscription in `ids`: the worker claims whichever has
    /// pending work, one at a time.
    pub fn subscriptions<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.ids.extend(ids.into_iter().map(Into::into));
        self
    }

    /// The wake stream (root-relative path). Default: read from the
    /// subscriptions at start, which must all be pull-wake and share one.
    pub fn wake_stream(mut self, path: impl Into<String>) -> Self {
        self.wake_stream = Some(path.into());
        self
    }

    /// The worker name the server records as lease holder. Default:
    /// `worker-<pid>-<random>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How the wake stream is tailed (default [`LiveMode::Auto`]; not `Off`).
    pub fn live(mut self, live: LiveMode) -> Self {
        self.live = live;
        self
    }

    /// How often the lease is extended while a wake is being processed.
    /// Default: a third of the lease; at most half of it.
    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.heartbeat = Some(every);
        self
    }

    /// Backoff between claim and wake-stream reconnect attempts after
    /// errors (default: unbounded, 250 ms doubling to 30 s, with jitter).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How often every subscription is tried even without a wake event
    /// (insurance against a wake missed while the wake stream was out of
    /// reach). Default 60 s; at least 1 s.
    pub fn resweep_interval(mut self, every: Duration) -> Self {
        self.resweep = every;
        self
    }

    /// Validate, resolve the wake stream, and start the worker on a tokio task.
    pub async fn start(self) -> Result<WorkerHandle> {
        let run = self.prepare().await?;
        let stats = Arc::clone(&run.stats);
        let name = run.name.clone();
        let task = TaskHandle::spawn("the worker task", &name, (), OnDrop::Abort, |token, _| {
            run.run(token)
        });
        Ok(WorkerHandle { task, stats })
    }

    /// Validate, resolve the wake stream, and run the worker on the current
    /// task until `shutdown` is cancelled (then it finishes the batch in
    /// hand, acks it and releases), the handler stops, or an error stops it.
    /// This is what a [supervisor](crate::supervisor::ChildSpec::worker) runs.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        self.prepare().await?.run(shutdown).await
    }

    async fn prepare(self) -> Result<Run<H>> {
        let settings = resolve_format::<H::Format>(self.format)?;
        if self.ids.is_empty() {
            return Err(Error::invalid_argument(
                "subscriptions",
                "a worker needs at least one subscription id",
            ));
        }
        if self.live == LiveMode::Off {
            return Err(Error::invalid_argument(
                "live",
                "the wake stream must be tailed live (long-poll, SSE or auto)",
            ));
        }
        if self.resweep < Duration::from_secs(1) {
            return Err(Error::invalid_argument(
                "resweep_interval",
                "must be at least 1 s",
            ));
        }
        if self.heartbeat.is_some_and(|h| h.is_zero()) {
            return Err(Error::invalid_argument(
                "heartbeat_interval",
                "must be greater than zero",
            ));
        }
        let wake_path = match self.wake_stream {
            Some(path) => path,
            None => resolve_wake_stream(&self.subs, &self.ids).await?,
        };
        let wake = self.subs.stream(&wake_path)?;
        let name = self
            .name
            .unwrap_or_else(|| format!("worker-{}-{:04x}", std::process::id(), fastrand::u16(..)));
        if name.is_empty() {
            return Err(Error::invalid_argument("name", "the worker name is empty"));
        }
        Ok(Run {
            subs: self.subs,
            ids: self.ids,
            name,
            handler: self.handler,
            wake,
            live: self.live,
            heartbeat: self.heartbeat,
            retry: self.retry,
            resweep: self.resweep,
            stats: Arc::new(Counters::default()),
            settings,
        })
    }
}

impl<H, C> WorkerBuilder<H>
where
    H: Handler<Format = Frames<C>>,
    C: Codec,
    C::Item: Sync,
{
    /// The codec and framing that decode a [`Frames<C>`] handler's
    /// messages (required for that format).
    pub fn framed(mut self, framed: Framed<C>) -> Self {
        self.format = Some(framed);
        self
    }
}

async fn resolve_wake_stream(subs: &Subscriptions, ids: &[String]) -> Result<String> {
    let mut found: Option<String> = None;
    for id in ids {
        let sub = subs.get(id).await?;
        let Some(wake) = sub.wake_stream else {
            return Err(Error::invalid_argument(
                "subscriptions",
                format!("subscription {id:?} is not pull-wake (it has no wake stream)"),
            ));
        };
        match &found {
            Some(prev) if *prev != wake => {
                return Err(Error::invalid_argument(
                    "wake_stream",
                    format!(
                        "the subscriptions use different wake streams ({prev:?}, {wake:?}); run one worker per wake stream"
                    ),
                ));
            }
            _ => found = Some(wake),
        }
    }
    found.ok_or_else(|| Error::invalid_argument("subscriptions", "no subscription ids"))
}

/// What a worker has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Wakes claimed.
    pub claims: u64,
    /// Wakes acked with `done`.
    pub completed: u64,
    /// Batches handed to the handler.
    pub batches: u64,
    /// Wakes fenced by the server.
    pub fenced: u64,
    /// Wakes abandoned because the lease lapsed.
    pub leases_lost: u64,
    /// Wakes released without finishing (shutdown, errors).
    pub released: u64,
}

#[derive(Debug, Default)]
struct Counters {
    claims: AtomicU64,
    completed: AtomicU64,
    batches: AtomicU64,
    fenced: AtomicU64,
    leases_lost: AtomicU64,
    released: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> WorkerStats {
        WorkerStats {
            claims: self.claims.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            fenced: self.fenced.load(Ordering::Relaxed),
            leases_lost: self.leases_lost.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
        }
    }
}

/// A running [`Worker`]. Dropping it aborts the worker (the wake in hand is
/// neither acked nor released; its lease lapses); use
/// [`shutdown`](Self::shutdown) to stop cleanly.
pub struct WorkerHandle {
    task: TaskHandle<(), ()>,
    stats: Arc<Counters>,
}

impl fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("name", &self.task.name())
            .field("stats", &self.stats.snapshot())
            .field("finished", &self.task.is_finished())
            .finish()
    }
}

impl WorkerHandle {
    /// The worker name (the lease holder the server records).
    pub fn name(&self) -> &str {
        self.task.name()
    }

    /// Counters of what the worker did so far.
    pub fn stats(&self) -> WorkerStats {
        self.stats.snapshot()
    }

    /// Whether the worker has stopped.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Ask the worker to stop without waiting (see [`shutdown`](Self::shutdown)).
    pub fn request_shutdown(&self) {
        self.task.request_shutdown();
    }

    /// Stop gracefully: the batch in hand is finished, its progress acked,
    /// and the wake released so another worker continues at once.
    pub async fn shutdown(self) -> Result<()> {
        self.task.shutdown().await
    }

    /// Wait until the worker stops on its own (a handler stop or an error).
    pub async fn join(self) -> Result<()> {
        self.task.join().await
    }

    /// Stop at once, as if the process died: nothing is acked or released;
    /// the lease lapses and another worker takes over.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// A wake event as written to the wake stream; anything else is ignored.
#[derive(Deserialize)]
struct WakeEvent {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    subscription_id: Option<String>,
}

type WakeReader = Pin<Box<dyn FuturesStream<Item = Result<Chunk>> + Send>>;

/// How the work on one wake ended.
enum Ended {
    /// Every pending stream was read to its snapshot tail.
    Complete,
    /// The lease lapsed or the server fenced a heartbeat.
    LeaseLost,
    /// Shutdown was requested between batches.
    Shutdown,
    /// The handler returned [`Flow::Stop`].
    Stopped,
}

/// What the worker does after a wake.
enum Next {
    /// Wait for wake events.
    Idle,
    /// The server already issued the next wake: try this subscription again.
    ClaimAgain,
    /// Stop the worker.
    Stop,
}

struct Run<H: Handler> {
    subs: Subscriptions,
    ids: Vec<String>,
    name: String,
    handler: H,
    wake: Stream,
    live: LiveMode,
    heartbeat: Option<Duration>,
    retry: RetryPolicy,
    resweep: Duration,
    stats: Arc<Counters>,
    settings: FormatSettings<H>,
}

impl<H: Handler> Run<H> {
    async fn run(mut self, token: CancellationToken) -> Result<()> {
        let mut backoff = Backoff::new(&self.retry);
        // Position on the wake stream's tail before the first sweep, so a
        // wake written after the sweep is seen in the stream.
        let mut position = loop {
            match self.wake.head().await {
                Ok(info) => break info.next_offset,
                Err(e) => {
                    self.wait_after(&token, &mut backoff, e, "wake stream")
                        .await?
                }
            }
            if token.is_cancelled() {
                return Ok(());
            }
        };
        backoff.reset();
        let mut reader = self.wake_reader(&position);
        let mut queue: VecDeque<String> = self.ids.iter().cloned().collect();
        let mut next_sweep = tokio::time::Instant::now() + self.sweep_delay();
        loop {
            while let Some(id) = queue.pop_front() {
                if token.is_cancelled() {
                    return Ok(());
                }
                match self.claim_and_work(&id, &token).await {
                    Ok(Next::Idle) => backoff.reset(),
                    Ok(Next::ClaimAgain) => {
                        backoff.reset();
                        push_unique(&mut queue, &id);
                    }
                    Ok(Next::Stop) => return Ok(()),
                    Err(e) => {
                        self.wait_after(&token, &mut backoff, e, "claim").await?;
                        push_unique(&mut queue, &id);
                    }
                }
            }
            let next = tokio::select! {
                biased;
                _ = token.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(next_sweep) => {
                    queue.extend(self.ids.iter().cloned());
                    next_sweep = tokio::time::Instant::now() + self.sweep_delay();
                    continue;
                }
                next = reader.next() => next,
            };
            match next {
                Some(Ok(mut chunk)) => {
                    if chunk.exact {
                        position = chunk.offset.clone();
                    }
                    self.queue_wakes(&mut chunk, &mut queue);
                    backoff.reset();
                }
                Some(Err(e)) => {
                    self.wait_after(&token, &mut backoff, e, "wake stream")
                        .await?;
                    reader = self.wake_reader(&position);
                    // Wakes may have been missed while the stream was out of reach.
                    queue.extend(self.ids.iter().cloned());
                }
                None => {
                    // The wake stream was closed: only sweeps remain.
                    tracing::warn!(worker = %self.name, "the wake stream is closed; falling back to periodic sweeps");
                    reader = Box::pin(futures::stream::pending());
                }
            }
        }
    }

    /// Resweep delay with ±10% jitter, so workers started together spread out.
    fn sweep_delay(&self) -> Duration {
        self.resweep.mul_f64(0.9 + fastrand::f64() * 0.2)
    }

    fn wake_reader(&self, position: &Offset) -> WakeReader {
        Box::pin(Session::new(self.wake.clone(), position.clone(), self.live, true).into_stream())
    }

    fn queue_wakes(&self, chunk: &mut Chunk, queue: &mut VecDeque<String>) {
        let messages = match chunk.take_json_messages() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(worker = %self.name, error = %e, "undecodable wake stream data; sweeping every subscription");
                queue.extend(self.ids.iter().cloned());
                return;
            }
        };
        for message in messages {
            let Ok(event) = serde_json::from_slice::<WakeEvent>(&message) else {
                continue;
            };
            if event.kind.as_deref() != Some("wake") {
                continue;
            }
            if let Some(id) = event.subscription_id
                && self.ids.contains(&id)
            {
                push_unique(queue, &id);
            }
        }
    }

    /// Ask the handler about `error`; stop (`Err`) or sleep the backoff delay.
    async fn wait_after(
        &mut self,
        token: &CancellationToken,
        backoff: &mut Backoff,
        error: Error,
        what: &'static str,
    ) -> Result<()> {
        let action = catch_panic("handle_error", self.handler.handle_error(&error)).await?;
        if action == ErrorAction::Stop {
            tracing::warn!(worker = %self.name, %error, what, "worker stopped by handle_error");
            return Err(error);
        }
        let Some(delay) = backoff.next_delay(error.retry_after()) else {
            return Err(error);
        };
        tracing::warn!(worker = %self.name, %error, what, delay_ms = delay.as_millis() as u64, "worker backing off");
        tokio::select! {
            _ = token.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
        }
        Ok(())
    }

    async fn claim_and_work(&mut self, id: &str, token: &CancellationToken) -> Result<Next> {
        let wake = match self.subs.claim(id, &self.name).await? {
            Claim::Claimed(wake) => wake,
            Claim::AlreadyClaimed { holder, .. } => {
                tracing::trace!(worker = %self.name, subscription = id, ?holder, "already claimed");
                return Ok(Next::Idle);
            }
            Claim::NoPendingWork => return Ok(Next::Idle),
        };
        Counters::bump(&self.stats.claims);
        subscription_event("claim", id);
        let span = tracing::info_span!(
            "durable_streams.subscription.wake",
            subscription = id,
            generation = wake.generation,
            wake_id = %wake.wake_id,
            worker = %self.name,
        );
        tracing::debug!(parent: &span, event = event_names::SUBSCRIPTION_CLAIM, streams = wake.pending().count(), "claimed");
        let lease = Arc::new(Lease::new(&wake));
        // Dropped (the heartbeat stops) when the wake ends, and also when the
        // worker is aborted, as if the process died.
        let heartbeat = self.spawn_heartbeat(&wake, &lease, span.clone());
        let ended = self.process(&wake, &lease, token).await;
        drop(heartbeat);
        let _entered = span.enter();
        self.finish(&wake, &lease, ended).await
    }

    /// Ack, release or abandon the wake depending on how its work ended.
    async fn finish(&mut self, wake: &Wake, lease: &Lease, ended: Result<Ended>) -> Result<Next> {
        let id = wake.subscription_id.as_str();
        let ended = match ended {
            Ok(ended) => ended,
            Err(error) => {
                // Keep what was handled, hand the rest back, then let the
                // handler decide (the caller backs off before claiming again).
                if !lease.lapsed() {
                    release(&self.subs, &self.stats, wake, lease).await;
                }
                return Err(error);
            }
        };
        let lapsed = lease.lapsed();
        match ended {
            Ended::Complete if !lapsed => {
                match self.subs.ack(wake, &lease.progress(), true).await {
                    Ok(outcome) => {
                        Counters::bump(&self.stats.completed);
                        subscription_event("ack", id);
                        tracing::debug!(
                            event = event_names::SUBSCRIPTION_ACK,
                            next_wake = outcome.next_wake,
                            "acked"
                        );
                        Ok(if outcome.next_wake {
                            Next::ClaimAgain
                        } else {
                            Next::Idle
                        })
                    }
                    Err(e) if is_fenced(&e) => Ok(self.fenced(id, &e)),
                    Err(e) => {
                        // At least once: unacked work is delivered again after the lease.
                        tracing::warn!(error = %e, "final ack failed; the wake will be delivered again");
                        Ok(Next::Idle)
                    }
                }
            }
            Ended::Shutdown | Ended::Stopped => {
                if lapsed {
                    self.lease_lost(id);
                } else {
                    release(&self.subs, &self.stats, wake, lease).await;
                }
                Ok(Next::Stop)
            }
            Ended::Complete | Ended::LeaseLost => Ok(self.lease_lost(id)),
        }
    }

    fn lease_lost(&self, id: &str) -> Next {
        Counters::bump(&self.stats.leases_lost);
        subscription_event("lease_lost", id);
        tracing::warn!(
            event = event_names::SUBSCRIPTION_LEASE_LOST,
            "lease lost; nothing more committed for this wake"
        );
        Next::Idle
    }

    fn fenced(&self, id: &str, error: &Error) -> Next {
        Counters::bump(&self.stats.fenced);
        subscription_event("fenced", id);
        tracing::warn!(event = event_names::SUBSCRIPTION_FENCED, %error, "fenced; nothing committed");
        Next::Idle
    }

    /// Read every pending stream from its acked offset to the snapshot's
    /// tail and hand the batches to the handler.
    async fn process(
        &mut self,
        wake: &Wake,
        lease: &Lease,
        token: &CancellationToken,
    ) -> Result<Ended> {
        for pending in wake.pending() {
            match self.process_stream(pending, lease, token).await? {
                Ended::Complete => {}
                other => return Ok(other),
            }
        }
        Ok(Ended::Complete)
    }

    async fn process_stream(
        &mut self,
        pending: &PendingStream,
        lease: &Lease,
        token: &CancellationToken,
    ) -> Result<Ended> {
        let stream = self.subs.stream(&pending.path)?;
        let path: Arc<str> = Arc::from(pending.path.as_str());
        let mut decoder = <H::Format as Format>::decoder(&self.settings, &pending.acked_offset);
        let limit = stream.client().max_response_bytes();
        let typed = <H::Format as Format>::session_decoder(&mut decoder, limit);
        let mut session = Session::new(
            stream,
            pending.acked_offset.clone(),
            LiveMode::Off,
            <H::Format as Format>::JSON,
        );
        if let Some(typed) = typed {
            // Large responses are decoded while they arrive.
            session.decode_with(typed.0);
        }
        let mut reader = Box::pin(session.into_stream());
        loop {
            if token.is_cancelled() {
                return Ok(Ended::Shutdown);
            }
            let next = tokio::select! {
                biased;
                _ = lease.lost.cancelled() => return Ok(Ended::LeaseLost),
                next = reader.next() => next,
            };
            let mut chunk = match next {
                None => return Ok(Ended::Complete),
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Gone) => {
                    // Deleted since the snapshot: the server unlinks it.
                    tracing::info!(stream = %pending.path, error = %e, "pending stream is gone; skipping it");
                    return Ok(Ended::Complete);
                }
                Some(Err(e)) => return Err(e),
            };
            let bytes = chunk.typed_bytes.unwrap_or(chunk.data.len());
            let items = <H::Format as Format>::decode(&mut decoder, &mut chunk)?;
            let batch = Batch::from_chunk(items, chunk, bytes, Arc::clone(&path));
            let mut flow = Flow::Continue;
            if !batch.items.is_empty() {
                Counters::bump(&self.stats.batches);
                let handled = catch_panic("handle_batch", self.handler.handle_batch(&batch));
                // A lapsed lease stops the handler at once: its work would not
                // be committed anyway.
                flow = tokio::select! {
                    biased;
                    _ = lease.lost.cancelled() => return Ok(Ended::LeaseLost),
                    flow = handled => flow??,
                };
            }
            if batch.exact {
                lease.record(&pending.path, &batch.offset);
            }
            if flow == Flow::Stop {
                return Ok(Ended::Stopped);
            }
            if batch.closed || (batch.exact && batch.offset >= pending.tail_offset) {
                return Ok(Ended::Complete);
            }
        }
    }

    fn spawn_heartbeat(
        &self,
        wake: &Wake,
        lease: &Arc<Lease>,
        span: tracing::Span,
    ) -> tokio_util::sync::DropGuard {
        let ttl = lease.ttl;
        let every = self.heartbeat.unwrap_or(ttl / 3).min(ttl / 2);
        let stop = CancellationToken::new();
        let beat = Heartbeat {
            subs: self.subs.clone(),
            wake: wake.clone(),
            lease: Arc::clone(lease),
            every,
        };
        let stop_task = stop.clone();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                tokio::select! {
                    _ = stop_task.cancelled() => {}
                    _ = beat.run() => {}
                }
            },
            span,
        ));
        stop.drop_guard()
    }
}

/// Commit the progress made so far, then give the wake back.
async fn release(subs: &Subscriptions, stats: &Counters, wake: &Wake, lease: &Lease) {
    let id = wake.subscription_id.as_str();
    let progress = lease.progress();
    if !progress.is_empty()
        && let Err(e) = subs.ack(wake, &progress, false).await
    {
        tracing::warn!(error = %e, "could not ack progress before releasing");
    }
    match subs.release(wake).await {
        Ok(()) => {
            Counters::bump(&stats.released);
            subscription_event("release", id);
            tracing::debug!(event = event_names::SUBSCRIPTION_RELEASE, "released");
        }
        Err(e) => tracing::warn!(error = %e, "release failed; the lease will lapse"),
    }
}

fn push_unique(queue: &mut VecDeque<String>, id: &str) {
    if !queue.iter().any(|q| q == id) {
        queue.push_back(id.to_owned());
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
