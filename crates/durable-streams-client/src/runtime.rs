//! What the long-running parts ([consumers](crate::consumer),
//! [pipelines](crate::pipeline), the [supervisor](crate::supervisor)) share:
//!
//! * [`TaskHandle`]: a spawned task with a shutdown token, a progress
//!   channel (the committed offset) and the same join, abort, detach and
//!   drop behaviour everywhere;
//! * [`catch_panic`], [`panic_message`] and [`join_error`]: how a panic or a task
//!   that ended abnormally becomes an [`Error`];
//! * [`ReaderConfig`]: the reader settings of the consumer and pipeline
//!   builders (stream, name, start, live mode, retry policy, checkpoint
//!   store), their validation and the start-offset resolution.
//!
//! The public handles ([`ConsumerHandle`](crate::consumer::ConsumerHandle),
//! [`PipelineHandle`](crate::pipeline::PipelineHandle),
//! [`SupervisorHandle`](crate::supervisor::SupervisorHandle)) are thin
//! wrappers over [`TaskHandle`]; the reader handles get their methods from
//! [`reader_handle!`](reader_handle), which takes each method's documentation
//! from the caller; the builders get their reader setters (over a shared
//! [`ReaderConfig`]) from [`reader_setters!`](reader_setters) the same way.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::DynCheckpointStore;
use crate::error::{Error, ErrorKind, Result};
use crate::offset::Offset;
use crate::read::LiveMode;
use crate::retry::RetryPolicy;
use crate::stream::Stream;

// ---------------------------------------------------------------------------
// Errors from panics and tasks

/// The text of a panic payload (`&str` or `String`; anything else is named
/// as such).
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// Run a handler future, turning a panic into an [`ErrorKind::Handler`] error.
pub(crate) async fn catch_panic<F: Future>(what: &'static str, fut: F) -> Result<F::Output> {
    AssertUnwindSafe(fut).catch_unwind().await.map_err(|panic| {
        Error::new(ErrorKind::Handler { panicked: true })
            .with_message(format!("{what} panicked: {}", panic_message(&*panic)))
    })
}

/// An [`ErrorKind::Internal`] error: a bug or an unexpected state inside
/// the library.
pub(crate) fn internal(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Internal).with_message(message.into())
}

/// The error for a task (`what`) that did not return: a panic that escaped
/// the handler guards is [`ErrorKind::Handler`] with `panicked: true` (it
/// may come from application code such as a checkpoint store or a key
/// function); a cancelled task is [`ErrorKind::Internal`].
pub(crate) fn join_error(what: &str, e: JoinError) -> Error {
    if e.is_panic() {
        let message = panic_message(&*e.into_panic());
        Error::new(ErrorKind::Handler { panicked: true })
            .with_message(format!("{what} panicked: {message}"))
    } else {
        internal(format!("{what} ended unexpectedly: {e}"))
    }
}

/// Where a consumer starts reading.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartFrom {
    /// The beginning of the stream.
    Start,
    /// The current tail: only data appended after the consumer started.
    Now,
    /// A known offset.
    Offset(Offset),
    /// The offset saved in the checkpoint store under the consumer's name;
    /// the beginning if none was saved (or no store is configured).
    #[default]
    Checkpoint,
}

/// The retry policy consumers use unless told otherwise: reconnect forever,
/// starting at 250 ms and backing off up to 30 s, with 50 % jitter.
pub fn default_retry_policy() -> RetryPolicy {
    RetryPolicy::default()
        .max_retries(u32::MAX)
        .initial_delay(Duration::from_millis(250))
        .max_delay(Duration::from_secs(30))
        .multiplier(2.0)
        .jitter(0.5)
}

// ---------------------------------------------------------------------------
// Task handles

/// What dropping a [`TaskHandle`] does to its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnDrop {
    /// Abort it (consumers and pipelines).
    Abort,
    /// Let it run (the supervisor; see [`SupervisorHandle`](crate::supervisor::SupervisorHandle)).
    Detach,
}

/// A spawned long-running task: `R` is what it returns, `P` what it
/// publishes while it runs (the committed offset for readers).
pub(crate) struct TaskHandle<R, P = Option<Offset>> {
    task: Option<JoinHandle<Result<R>>>,
    token: CancellationToken,
    progress: watch::Receiver<P>,
    name: Arc<str>,
    /// The task's name in errors, e.g. "the consumer task".
    what: &'static str,
    on_drop: OnDrop,
}

impl<R: Send + 'static, P: Send + Sync + 'static> TaskHandle<R, P> {
    /// Spawn `make(token, progress)` on a new tokio task.
    pub(crate) fn spawn<F>(
        what: &'static str,
        name: &str,
        initial: P,
        on_drop: OnDrop,
        make: impl FnOnce(CancellationToken, watch::Sender<P>) -> F,
    ) -> Self
    where
        F: Future<Output = Result<R>> + Send + 'static,
    {
        let token = CancellationToken::new();
        let (tx, rx) = watch::channel(initial);
        let task = tokio::spawn(make(token.clone(), tx));
        TaskHandle {
            task: Some(task),
            token,
            progress: rx,
            name: Arc::from(name),
            what,
            on_drop,
        }
    }

    pub(crate) async fn shutdown(self) -> Result<R> {
        self.token.cancel();
        self.join().await
    }

    pub(crate) async fn join(mut self) -> Result<R> {
        let Some(task) = self.task.take() else {
            return Err(internal(format!("{} is gone", self.what)));
        };
        task.await.unwrap_or_else(|e| Err(join_error(self.what, e)))
    }

    /// Wait until `signal` resolves or the task ends, whichever comes
    /// first: on `signal`, [`shutdown`](Self::shutdown) (cancel the token,
    /// which drains, and wait); when the task ended first, its result as
    /// [`join`](Self::join) returns it. Dropping the future drops the
    /// handle (see [`OnDrop`]).
    pub(crate) async fn shutdown_on<F>(mut self, signal: F) -> Result<R>
    where
        F: Future + Send,
    {
        let ended = {
            let Some(task) = self.task.as_mut() else {
                return Err(internal(format!("{} is gone", self.what)));
            };
            tokio::select! {
                biased;
                joined = task => Some(joined),
                _ = signal => None,
            }
        };
        match ended {
            Some(joined) => {
                self.task = None;
                joined.unwrap_or_else(|e| Err(join_error(self.what, e)))
            }
            None => self.shutdown().await,
        }
    }

    /// [`shutdown_on`](Self::shutdown_on) ctrl-c ([`ctrl_c`]).
    pub(crate) async fn shutdown_on_ctrl_c(self) -> Result<R> {
        let what = format!("{} ({})", self.what, self.name);
        self.shutdown_on(ctrl_c(&what)).await
    }
}

/// Resolves on ctrl-c (SIGINT), logging that `what` is shutting down; never
/// when the signal cannot be listened for (logged as a warning). Once
/// listened for, ctrl-c no longer ends the process by itself (tokio
/// replaces the default handler for the life of the process).
pub(crate) async fn ctrl_c(what: &str) {
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::warn!(error = %e, "cannot listen for ctrl-c; {what} runs until stopped otherwise");
        std::future::pending::<()>().await;
    }
    tracing::info!("{what} received ctrl-c; shutting down");
}

impl<R, P> TaskHandle<R, P> {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<P> {
        self.progress.clone()
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    pub(crate) fn request_shutdown(&self) {
        self.token.cancel();
    }

    pub(crate) fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    pub(crate) fn detach(mut self) {
        self.task.take();
    }
}

impl<R, P: Clone> TaskHandle<R, P> {
    pub(crate) fn progress(&self) -> P {
        self.progress.borrow().clone()
    }
}

impl<R, P: Clone + fmt::Debug> TaskHandle<R, P> {
    /// `Debug` output under the public handle's type name.
    pub(crate) fn debug(&self, type_name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(type_name)
            .field("name", &self.name)
            .field("offset", &self.progress())
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<R, P> Drop for TaskHandle<R, P> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take()
            && self.on_drop == OnDrop::Abort
        {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------------------
// Reader configuration

/// The reader settings that consumer and pipeline builders share.
pub(crate) struct ReaderConfig {
    pub(crate) stream: Stream,
    /// Checkpoint key and telemetry label.
    pub(crate) name: String,
    pub(crate) start: StartFrom,
    pub(crate) live: LiveMode,
    pub(crate) retry: RetryPolicy,
    pub(crate) store: Option<Arc<dyn DynCheckpointStore>>,
}

impl ReaderConfig {
    /// Defaults: [`StartFrom::Checkpoint`], [`LiveMode::Auto`],
    /// [`default_retry_policy`], no checkpoint store.
    pub(crate) fn new(stream: Stream, name: &str) -> Self {
        ReaderConfig {
            stream,
            name: name.to_owned(),
            start: StartFrom::Checkpoint,
            live: LiveMode::Auto,
            retry: default_retry_policy(),
            store: None,
        }
    }

    /// Check the retry policy and the name (`what` is "consumer" or
    /// "pipeline", for the message).
    pub(crate) fn validate(&self, what: &str) -> Result<()> {
        self.retry.validate()?;
        if self.name.is_empty() {
            return Err(Error::invalid_argument(
                "name",
                format!("{what} name must not be empty"),
            ));
        }
        if let Some(store) = &self.store {
            store.validate_name_dyn(&self.name)?;
        }
        Ok(())
    }

    /// Resolve the start offset unless `token` is cancelled first (`None`).
    /// An offset loaded from the checkpoint store is published to `committed`.
    pub(crate) async fn start_offset(
        &self,
        token: &CancellationToken,
        committed: &watch::Sender<Option<Offset>>,
    ) -> Result<Option<Offset>> {
        let (offset, loaded) = tokio::select! {
            biased;
            _ = token.cancelled() => return Ok(None),
            r = resolve_start(&self.stream, &self.start, self.store.as_deref(), &self.name) => r?,
        };
        if loaded {
            committed.send_replace(Some(offset.clone()));
        }
        Ok(Some(offset))
    }
}

/// Resolve where a reader starts: a concrete offset, and whether it came
/// from the checkpoint store.
async fn resolve_start(
    stream: &Stream,
    start: &StartFrom,
    store: Option<&dyn DynCheckpointStore>,
    name: &str,
) -> Result<(Offset, bool)> {
    match start {
        StartFrom::Start => Ok((Offset::start(), false)),
        StartFrom::Offset(o) if !o.is_now() => Ok((o.clone(), false)),
        // Pin "now" to a concrete offset so a reconnect before the first
        // commit does not skip data appended in between.
        StartFrom::Now | StartFrom::Offset(_) => Ok((stream.head().await?.next_offset, false)),
        StartFrom::Checkpoint => {
            let Some(store) = store else {
                return Ok((Offset::start(), false));
            };
            match store.load_boxed(name).await? {
                Some(offset) => {
                    tracing::debug!(%offset, "resuming from checkpoint");
                    Ok((offset, true))
                }
                None => Ok((Offset::start(), false)),
            }
        }
    }
}

/// The `Debug` impl and the methods of a public reader handle (a
/// one-field tuple struct over `TaskHandle<R>`): each method delegates to
/// the [`TaskHandle`]; the caller writes every method's documentation.
macro_rules! reader_handle {
    (
        $handle:ident -> $r:ty;
        $(#[$name:meta])* name;
        $(#[$offset:meta])* offset;
        $(#[$subscribe:meta])* subscribe;
        $(#[$finished:meta])* is_finished;
        $(#[$request:meta])* request_shutdown;
        $(#[$shutdown:meta])* shutdown;
        $(#[$shutdown_on:meta])* shutdown_on;
        $(#[$ctrl_c:meta])* shutdown_on_ctrl_c;
        $(#[$join:meta])* join;
        $(#[$abort:meta])* abort;
        $(#[$detach:meta])* detach;
    ) => {
        impl ::std::fmt::Debug for $handle {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.0.debug(stringify!($handle), f)
            }
        }

        impl $handle {
            $(#[$name])*
            pub fn name(&self) -> &str {
                self.0.name()
            }

            $(#[$offset])*
            pub fn offset(&self) -> Option<$crate::Offset> {
                self.0.progress()
            }

            $(#[$subscribe])*
            pub fn subscribe(&self) -> ::tokio::sync::watch::Receiver<Option<$crate::Offset>> {
                self.0.subscribe()
            }

            $(#[$finished])*
            pub fn is_finished(&self) -> bool {
                self.0.is_finished()
            }

            $(#[$request])*
            pub fn request_shutdown(&self) {
                self.0.request_shutdown();
            }

            $(#[$shutdown])*
            pub async fn shutdown(self) -> $crate::Result<$r> {
                self.0.shutdown().await
            }

            $(#[$shutdown_on])*
            pub async fn shutdown_on<F>(self, signal: F) -> $crate::Result<$r>
            where
                F: ::std::future::Future + Send,
            {
                self.0.shutdown_on(signal).await
            }

            $(#[$ctrl_c])*
            pub async fn shutdown_on_ctrl_c(self) -> $crate::Result<$r> {
                self.0.shutdown_on_ctrl_c().await
            }

            $(#[$join])*
            pub async fn join(self) -> $crate::Result<$r> {
                self.0.join().await
            }

            $(#[$abort])*
            pub fn abort(self) {
                self.0.abort();
            }

            $(#[$detach])*
            pub fn detach(self) {
                self.0.detach();
            }
        }
    };
}
pub(crate) use reader_handle;

/// The reader setters of a builder with a `reader: ReaderConfig` field
/// (inside its `impl` block); the caller writes every setter's documentation.
macro_rules! reader_setters {
    (
        $(#[$name:meta])* name;
        $(#[$start:meta])* start_from;
        $(#[$live:meta])* live;
        $(#[$retry:meta])* retry_policy;
        $(#[$store:meta])* checkpoint_store;
    ) => {
        $(#[$name])*
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.reader.name = name.into();
            self
        }

        $(#[$start])*
        pub fn start_from(mut self, start: $crate::runtime::StartFrom) -> Self {
            self.reader.start = start;
            self
        }

        $(#[$live])*
        pub fn live(mut self, live: $crate::LiveMode) -> Self {
            self.reader.live = live;
            self
        }

        $(#[$retry])*
        pub fn retry_policy(mut self, policy: $crate::RetryPolicy) -> Self {
            self.reader.retry = policy;
            self
        }

        $(#[$store])*
        pub fn checkpoint_store(mut self, store: impl $crate::checkpoint::CheckpointStore) -> Self {
            self.reader.store = Some(::std::sync::Arc::new(store));
            self
        }
    };
}
pub(crate) use reader_setters;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn join_errors_map_panics_to_handler_and_cancellation_to_internal() {
        let panicked = tokio::spawn(async { panic!("boom") }).await.unwrap_err();
        let e = join_error("the test task", panicked);
        assert_eq!(e.kind(), &ErrorKind::Handler { panicked: true });
        assert!(
            e.to_string().contains("the test task panicked: boom"),
            "{e}"
        );

        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        let e = join_error("the test task", task.await.unwrap_err());
        assert_eq!(e.kind(), &ErrorKind::Internal);
        assert!(e.to_string().contains("ended unexpectedly"), "{e}");

        let payload: Box<dyn Any + Send> = Box::new(7_u8);
        assert_eq!(panic_message(&*payload), "non-string panic payload");
    }

    fn pending_handle(on_drop: OnDrop) -> (TaskHandle<(), ()>, CancellationToken) {
        let observed = CancellationToken::new();
        // Cancelled when the task's future is dropped (ended or aborted).
        let guard = observed.clone().drop_guard();
        let handle = TaskHandle::spawn("the test task", "t", (), on_drop, |token, _| async move {
            let _guard = guard;
            token.cancelled().await;
            Ok(())
        });
        (handle, observed)
    }

    #[tokio::test]
    async fn dropping_aborts_or_detaches_as_configured() {
        let (handle, ended) = pending_handle(OnDrop::Abort);
        drop(handle);
        tokio::time::timeout(Duration::from_secs(5), ended.cancelled())
            .await
            .expect("an aborting handle's task ends when the handle is dropped");

        let (handle, ended) = pending_handle(OnDrop::Detach);
        drop(handle);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!ended.is_cancelled(), "a detaching handle's task runs on");
    }

    /// A task that ends on its own when `end` resolves ("ended"), or
    /// drains when its token is cancelled ("drained").
    fn ending_on(end: tokio::sync::oneshot::Receiver<()>) -> TaskHandle<&'static str, ()> {
        TaskHandle::spawn(
            "the test task",
            "t",
            (),
            OnDrop::Abort,
            |token, _| async move {
                tokio::select! {
                    _ = token.cancelled() => Ok("drained"),
                    _ = end => Ok("ended"),
                }
            },
        )
    }

    #[tokio::test]
    async fn shutdown_on_runs_until_the_signal_then_shuts_down() {
        let (_end, end) = tokio::sync::oneshot::channel();
        let (signal, signalled) = tokio::sync::oneshot::channel::<()>();
        let waiting = tokio::spawn(ending_on(end).shutdown_on(signalled));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "it runs until the signal");
        signal.send(()).unwrap();
        assert_eq!(waiting.await.unwrap().unwrap(), "drained");
    }

    #[tokio::test]
    async fn shutdown_on_returns_what_the_task_returned_when_it_ends_first() {
        let (end, ended) = tokio::sync::oneshot::channel();
        end.send(()).unwrap();
        let never = std::future::pending::<()>();
        assert_eq!(ending_on(ended).shutdown_on(never).await.unwrap(), "ended");

        let failing =
            TaskHandle::<(), ()>::spawn("the test task", "t", (), OnDrop::Abort, |_, _| async {
                Err(internal("boom"))
            });
        let e = failing
            .shutdown_on(std::future::pending::<()>())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Internal);
    }

    #[tokio::test]
    async fn shutdown_cancels_the_token_and_returns_the_result() {
        let (handle, _) = pending_handle(OnDrop::Abort);
        assert_eq!(handle.name(), "t");
        assert!(!handle.is_finished());
        handle.shutdown().await.unwrap();
    }
}
