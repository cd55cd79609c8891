//! Supervision: run many long-lived children (consumers, pipelines,
//! producers, any async task), restart the ones that fail, and shut them all
//! down gracefully.
//!
//! A [`Supervisor`] follows the Erlang/OTP `one_for_one` strategy: each
//! child is started from its [`ChildSpec`] factory with its own
//! [`CancellationToken`]; when a child ends, its [`Restart`] policy decides
//! whether it is started again (after a backoff delay from a
//! [`RetryPolicy`]). Panics are caught through the child task's
//! `JoinError::is_panic` and count as failures.
//!
//! **Restart intensity.** If more than `max_restarts` restarts happen within
//! `period`, the supervisor gives up: it shuts every child down and returns
//! an error of kind [`ErrorKind::RestartIntensity`] (so an outer supervisor
//! or the process can react), instead of restarting a crashing child forever.
//!
//! **Shutdown.** Cancelling the supervisor's token (or ctrl-c, with
//! [`SupervisorBuilder::stop_on_ctrl_c`]) cancels every child's token and
//! waits up to [`shutdown_timeout`](SupervisorBuilder::shutdown_timeout) for
//! them to finish; children still running after that are aborted.
//!
//! ```no_run
//! use std::time::Duration;
//! use durable_streams_client::supervisor::{ChildSpec, Restart, Supervisor};
//! use durable_streams_client::Result;
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<()> {
//! let supervisor = Supervisor::builder()
//!     .child(ChildSpec::new("heartbeat", |token: CancellationToken| async move {
//!         while !token.is_cancelled() {
//!             println!("alive");
//!             tokio::time::sleep(Duration::from_secs(1)).await;
//!         }
//!         Ok(())
//!     }))
//!     .child(ChildSpec::new("import", |_token| async { Ok(()) }).restart(Restart::Transient))
//!     .intensity(3, Duration::from_secs(5))
//!     .shutdown_timeout(Duration::from_secs(10))
//!     .stop_on_ctrl_c(true)
//!     .build()?;
//! supervisor.run(CancellationToken::new()).await?;
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::consumer::{Consumer, Handler};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::Pipeline;
use crate::retry::{Backoff, RetryPolicy};
use crate::runtime::{OnDrop, TaskHandle, join_error};
use crate::telemetry::event_names;

/// When a child that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Always (also after it returned `Ok`), until the supervisor shuts down.
    #[default]
    Permanent,
    /// Only after it failed (returned `Err` or panicked).
    Transient,
    /// Never; the child runs once.
    Temporary,
}

type Factory = Arc<dyn Fn(CancellationToken) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// How to start (and restart) one child.
#[derive(Clone)]
pub struct ChildSpec {
    name: Arc<str>,
    restart: Restart,
    factory: Factory,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A child made by `factory`, called for every (re)start with a token
    /// that is cancelled when the supervisor shuts down. The child should
    /// stop soon after its token is cancelled. Policy: [`Restart::Permanent`].
    pub fn new<F, Fut>(name: impl Into<String>, factory: F) -> Self
    where
        F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        ChildSpec {
            name: Arc::from(name.into()),
            restart: Restart::Permanent,
            factory: Arc::new(move |token| Box::pin(factory(token))),
        }
    }

    /// A [`Consumer`] built by `make` for every (re)start. A consumer that
    /// stops on its own with a [`StopReason`](crate::consumer::StopReason)
    /// counts as a normal exit, an `Err` as a failure.
    pub fn consumer<H, F>(name: impl Into<String>, make: F) -> Self
    where
        H: Handler,
        F: Fn() -> Result<Consumer<H>> + Send + Sync + 'static,
    {
        Self::new(name, move |token| {
            let consumer = make();
            async move {
                consumer?.run(token).await?;
                Ok(())
            }
        })
    }

    /// A [`Pipeline`] built by `make` for every (re)start; on shutdown it
    /// drains and commits. Exits like [`ChildSpec::consumer`].
    pub fn pipeline<T, F>(name: impl Into<String>, make: F) -> Self
    where
        T: Send + 'static,
        F: Fn() -> Result<Pipeline<T>> + Send + Sync + 'static,
    {
        Self::new(name, move |token| {
            let pipeline = make();
            async move {
                pipeline?.run(token).await?;
                Ok(())
            }
        })
    }

    /// A subscription [`Worker`](crate::subscription::Worker) configured by
    /// `make` for every (re)start; on shutdown it finishes the batch in hand,
    /// acks it and releases its wake. Exits like [`ChildSpec::consumer`].
    pub fn worker<H, F>(name: impl Into<String>, make: F) -> Self
    where
        H: Handler,
        F: Fn() -> crate::subscription::WorkerBuilder<H> + Send + Sync + 'static,
    {
        Self::new(name, move |token| make().run(token))
    }

    /// The restart policy (default [`Restart::Permanent`]).
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Configures a [`Supervisor`]. Made by [`Supervisor::builder`].
#[derive(Debug)]
#[must_use]
pub struct SupervisorBuilder {
    children: Vec<ChildSpec>,
    max_restarts: u32,
    period: Duration,
    backoff: RetryPolicy,
    shutdown_timeout: Duration,
    ctrl_c: bool,
}

/// The backoff supervisors use unless told otherwise: 100 ms doubling up
/// to 10 s, 20 % jitter. Its `max_retries` is not used (see
/// [`SupervisorBuilder::intensity`]).
pub fn default_backoff() -> RetryPolicy {
    RetryPolicy::default()
        .max_retries(u32::MAX)
        .initial_delay(Duration::from_millis(100))
        .max_delay(Duration::from_secs(10))
        .multiplier(2.0)
        .jitter(0.2)
}

impl SupervisorBuilder {
    /// Add a child. Children start in the order they were added.
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }

    /// Add several children.
    pub fn children(mut self, children: impl IntoIterator<Item = ChildSpec>) -> Self {
        self.children.extend(children);
        self
    }

    /// Restart intensity: at most `max_restarts` restarts (of all children
    /// together) within any `period`; one more and the supervisor stops with
    /// [`ErrorKind::RestartIntensity`]. Default: 3 within 5 s. `0` restarts
    /// means the first failure stops the supervisor.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.period = period;
        self
    }

    /// Delay before restarting a child: `backoff.delay(n)` for its `n`-th
    /// consecutive restart (reset once a child has run for longer than the
    /// intensity period). Default [`default_backoff`].
    pub fn backoff(mut self, backoff: RetryPolicy) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long shutdown waits for children before aborting them (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Also shut down gracefully on ctrl-c / SIGINT (default false).
    pub fn stop_on_ctrl_c(mut self, enabled: bool) -> Self {
        self.ctrl_c = enabled;
        self
    }

    /// Check the configuration. Errors are `InvalidArgument`: `children`
    /// (none, or two with the same name), `name` (empty child name),
    /// `period` (zero), or the backoff policy's fields.
    pub fn build(self) -> Result<Supervisor> {
        self.backoff.validate()?;
        if self.children.is_empty() {
            return Err(Error::invalid_argument(
                "children",
                "a supervisor needs at least one child",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for child in &self.children {
            if child.name.is_empty() {
                return Err(Error::invalid_argument(
                    "name",
                    "child names must not be empty",
                ));
            }
            if !names.insert(Arc::clone(&child.name)) {
                return Err(Error::invalid_argument(
                    "children",
                    format!("two children are named `{}`", child.name),
                ));
            }
        }
        if self.period.is_zero() {
            return Err(Error::invalid_argument(
                "period",
                "the restart intensity period must be greater than 0",
            ));
        }
        Ok(Supervisor { config: self })
    }
}

/// Runs and restarts children. See the [module docs](self).
#[derive(Debug)]
pub struct Supervisor {
    config: SupervisorBuilder,
}

/// Controls a spawned supervisor.
///
/// Dropping the handle does **not** stop the supervisor (unlike a
/// [`ConsumerHandle`](crate::consumer::ConsumerHandle) or
/// [`PipelineHandle`](crate::pipeline::PipelineHandle), which abort their
/// task): a supervisor is the root of a process's long-running work, and
/// aborting it would kill every child without the graceful shutdown it
/// exists for. Call [`shutdown`](SupervisorHandle::shutdown).
pub struct SupervisorHandle(TaskHandle<(), ()>);

impl fmt::Debug for SupervisorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorHandle")
            .field("finished", &self.0.is_finished())
            .finish_non_exhaustive()
    }
}

impl SupervisorHandle {
    /// Ask for a graceful shutdown without waiting.
    pub fn request_shutdown(&self) {
        self.0.request_shutdown();
    }

    /// Shut every child down gracefully (within the shutdown timeout) and wait.
    pub async fn shutdown(self) -> Result<()> {
        self.0.shutdown().await
    }

    /// Wait until the supervisor stops: `Ok` after a shutdown or once no
    /// child is left to run, `Err` when the restart intensity was exceeded.
    pub async fn join(self) -> Result<()> {
        self.0.join().await
    }

    /// Whether the supervisor has stopped.
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

/// Per-child bookkeeping while the supervisor runs.
struct Slot {
    spec: ChildSpec,
    /// Restart delays of this child (reset after a long enough run).
    backoff: Backoff,
    started: Instant,
}

impl Supervisor {
    /// Configure a supervisor.
    pub fn builder() -> SupervisorBuilder {
        SupervisorBuilder {
            children: Vec::new(),
            max_restarts: 3,
            period: Duration::from_secs(5),
            backoff: default_backoff(),
            shutdown_timeout: Duration::from_secs(30),
            ctrl_c: false,
        }
    }

    /// Run on a new tokio task.
    pub fn spawn(self) -> SupervisorHandle {
        SupervisorHandle(TaskHandle::spawn(
            "the supervisor task",
            "supervisor",
            (),
            OnDrop::Detach,
            |token, _progress| self.run(token),
        ))
    }

    /// Run in the current task until `shutdown` is cancelled (or ctrl-c),
    /// every child ended for good, or the restart intensity was exceeded.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let c = self.config;
        let mut children = Children::start(c.children, &c.backoff);
        let mut intensity = Intensity {
            restarts: VecDeque::new(),
            max_restarts: c.max_restarts,
            period: c.period,
        };
        let ctrl_c = ctrl_c_signal(c.ctrl_c);
        tokio::pin!(ctrl_c);

        let outcome: Result<()> = loop {
            let joined = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                _ = &mut ctrl_c => break Ok(()),
                joined = children.set.join_next_with_id() => joined,
            };
            let Some(joined) = joined else {
                tracing::debug!("supervisor: no children left");
                break Ok(());
            };
            let (id, result) = joined.unwrap_or_else(|e| (e.id(), Err(join_error("child", e))));
            if let Err(error) = children.ended(id, result, &mut intensity, &c.backoff) {
                break Err(error);
            }
        };
        children.shutdown(c.shutdown_timeout).await;
        outcome
    }
}

/// Resolves on ctrl-c when `enabled` (never otherwise).
async fn ctrl_c_signal(enabled: bool) {
    if enabled {
        crate::runtime::ctrl_c("supervisor").await;
    } else {
        std::future::pending::<()>().await;
    }
}

/// Whether a child that ended is restarted, and the telemetry reason.
fn restart_decision(result: &Result<()>, policy: Restart) -> (bool, &'static str) {
    match (result, policy) {
        (_, Restart::Temporary) => (false, "exit"),
        (Ok(()), Restart::Transient) => (false, "exit"),
        (Ok(()), Restart::Permanent) => (true, "exit"),
        (Err(e), _) if matches!(e.kind(), ErrorKind::Handler { panicked: true }) => (true, "panic"),
        (Err(_), _) => (true, "error"),
    }
}

/// The restart intensity window: when the recent restarts happened.
struct Intensity {
    restarts: VecDeque<Instant>,
    max_restarts: u32,
    period: Duration,
}

impl Intensity {
    /// Record a restart at `now`, or `Err` with the restarts in the window
    /// when one more would exceed the intensity.
    fn admit(&mut self, now: Instant) -> std::result::Result<(), usize> {
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.period)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= self.max_restarts as usize {
            return Err(self.restarts.len());
        }
        self.restarts.push_back(now);
        Ok(())
    }
}

/// The running children: their tasks, which slot each task belongs to, and
/// the token that stops them all.
struct Children {
    set: JoinSet<Result<()>>,
    running: HashMap<tokio::task::Id, usize>,
    slots: Vec<Slot>,
    token: CancellationToken,
}

impl Children {
    /// Start every child, in order.
    fn start(specs: Vec<ChildSpec>, backoff: &RetryPolicy) -> Self {
        let mut children = Children {
            set: JoinSet::new(),
            running: HashMap::new(),
            slots: Vec::with_capacity(specs.len()),
            token: CancellationToken::new(),
        };
        for (i, spec) in specs.into_iter().enumerate() {
            let id = start(&mut children.set, &spec, children.token.child_token(), None);
            children.running.insert(id, i);
            children.slots.push(Slot {
                spec,
                backoff: Backoff::unbounded(backoff),
                started: Instant::now(),
            });
        }
        children
    }

    /// Handle the end of task `id`: restart it per its policy (after its
    /// backoff delay), or `Err` when the restart intensity is exceeded.
    fn ended(
        &mut self,
        id: tokio::task::Id,
        result: Result<()>,
        intensity: &mut Intensity,
        backoff: &RetryPolicy,
    ) -> Result<()> {
        let Some(index) = self.running.remove(&id) else {
            return Ok(());
        };
        let slot = &mut self.slots[index];
        let name = Arc::clone(&slot.spec.name);
        let (restart, reason) = restart_decision(&result, slot.spec.restart);
        if !restart {
            match &result {
                Ok(()) => tracing::debug!(child = %name, "child finished"),
                Err(e) => tracing::warn!(child = %name, error = %e, "temporary child failed"),
            }
            return Ok(());
        }
        let now = Instant::now();
        if let Err(restarts) = intensity.admit(now) {
            tracing::error!(
                event = event_names::SUPERVISOR_GAVE_UP,
                child = %name,
                restarts,
                period_ms = intensity.period.as_millis() as u64,
                "supervisor restart intensity exceeded; stopping"
            );
            let mut error = Error::new(ErrorKind::RestartIntensity).with_message(format!(
                "child `{name}` ended ({reason}) after {restarts} restarts within {:?}",
                intensity.period
            ));
            if let Err(e) = result {
                error = error.with_source(e);
            }
            return Err(error);
        }
        if now.duration_since(slot.started) > intensity.period {
            slot.backoff.reset();
        }
        // Unbounded (the restart intensity bounds restarts), so always a delay.
        let delay = slot.backoff.next_delay(None).unwrap_or(backoff.max_delay);
        let error = result.as_ref().err().map(|e| e as &dyn std::fmt::Display);
        crate::telemetry::supervisor_restart(&name, reason, delay, error);
        slot.started = now + delay;
        let id = start(
            &mut self.set,
            &slot.spec,
            self.token.child_token(),
            Some(delay),
        );
        self.running.insert(id, index);
        Ok(())
    }

    /// Graceful shutdown of whatever still runs: cancel every child's token,
    /// wait up to `timeout`, then abort the rest.
    async fn shutdown(mut self, timeout: Duration) {
        self.token.cancel();
        let drained = tokio::time::timeout(timeout, async {
            while let Some(joined) = self.set.join_next_with_id().await {
                let id = match &joined {
                    Ok((id, _)) => *id,
                    Err(e) => e.id(),
                };
                let name = self
                    .running
                    .get(&id)
                    .map(|&i| self.slots[i].spec.name.to_string())
                    .unwrap_or_default();
                match joined {
                    Ok((_, Ok(()))) => tracing::debug!(child = %name, "child stopped"),
                    Ok((_, Err(e))) => {
                        tracing::warn!(child = %name, error = %e, "child stopped with an error")
                    }
                    Err(e) => tracing::warn!(child = %name, error = %e, "child stopped abnormally"),
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                remaining = self.set.len(),
                timeout_ms = timeout.as_millis() as u64,
                "children did not stop within the shutdown timeout; aborting them"
            );
            self.set.shutdown().await;
        }
    }
}

/// Start one child (after `delay`, waiting on its token).
fn start(
    set: &mut JoinSet<Result<()>>,
    spec: &ChildSpec,
    token: CancellationToken,
    delay: Option<Duration>,
) -> tokio::task::Id {
    let factory = Arc::clone(&spec.factory);
    let span = tracing::info_span!("durable_streams.supervisor.child", child = %spec.name);
    let handle = set.spawn(tracing::Instrument::instrument(
        async move {
            if let Some(delay) = delay {
                tokio::select! {
                    _ = token.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            factory(token).await
        },
        span,
    ));
    handle.id()
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
