//! The materializer: read a State Protocol stream in order (catch-up, then
//! live), validate every message, and apply each read batch to a
//! [`StateStore`] together with its offset.

use std::collections::HashMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::message::{Change, ControlKind, Operation, Position, StateMessage, invalid};
use super::store::{ApplyBatch, MemoryState, MemoryStore, StateStore, StoreOp};
use crate::consumer::StopReason;
use crate::error::{Error, ErrorKind, Result};
use crate::offset::Offset;
use crate::read::{Chunk, LiveMode, Session};
use crate::retry::{Backoff, RetryPolicy};
use crate::runtime::{OnDrop, TaskHandle, default_retry_policy};
use crate::stream::Stream;

type SchemaCheck = Arc<dyn Fn(&serde_json::Value) -> std::result::Result<(), String> + Send + Sync>;

/// Materializes a State Protocol stream; see [`Materializer::builder`].
#[derive(Debug)]
pub struct Materializer;

impl Materializer {
    /// Materialize `stream` into memory (the default store; read it through
    /// [`MaterializerBuilder::state`]), or into another store with
    /// [`MaterializerBuilder::store`].
    pub fn builder(stream: &Stream) -> MaterializerBuilder<MemoryStore> {
        MaterializerBuilder {
            stream: stream.clone(),
            store: MemoryStore::new(),
            live: LiveMode::Auto,
            start: Offset::start(),
            retry: default_retry_policy(),
            schemas: HashMap::new(),
        }
    }
}

/// Configures a materializer.
pub struct MaterializerBuilder<S> {
    stream: Stream,
    store: S,
    live: LiveMode,
    start: Offset,
    retry: RetryPolicy,
    schemas: HashMap<String, SchemaCheck>,
}

impl<S> std::fmt::Debug for MaterializerBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaterializerBuilder")
            .field("stream", &self.stream)
            .field("live", &self.live)
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

impl MaterializerBuilder<MemoryStore> {
    /// The in-memory state this materializer will update.
    pub fn state(&self) -> MemoryState {
        self.store.state()
    }
}

impl<S: StateStore> MaterializerBuilder<S> {
    /// Materialize into `store` instead (for example the SQLite store).
    pub fn store<S2: StateStore>(self, store: S2) -> MaterializerBuilder<S2> {
        MaterializerBuilder {
            stream: self.stream,
            store,
            live: self.live,
            start: self.start,
            retry: self.retry,
            schemas: self.schemas,
        }
    }

    /// Keep following the stream after catching up (default
    /// [`LiveMode::Auto`]); [`LiveMode::Off`] stops at the tail.
    pub fn live(mut self, live: LiveMode) -> Self {
        self.live = live;
        self
    }

    /// Where to start when the store has no committed offset (default: the
    /// beginning). A store with one always resumes from it.
    pub fn start_from(mut self, offset: Offset) -> Self {
        self.start = offset;
        self
    }

    /// Backoff between reconnects after errors (default: unbounded, 250 ms
    /// doubling to 30 s, with jitter).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Check every value of `entity_type` against `T` when it is applied: a
    /// value that does not deserialize stops the materializer with an error
    /// of kind [`ErrorKind::InvalidMessage`] naming the offset and the key.
    pub fn schema<T: DeserializeOwned + 'static>(mut self, entity_type: impl Into<String>) -> Self {
        self.schemas.insert(
            entity_type.into(),
            Arc::new(|v| {
                T::deserialize(v)
                    .map(drop)
                    .map_err(|e| format!("does not match {}: {e}", std::any::type_name::<T>()))
            }),
        );
        self
    }

    /// Start on a tokio task.
    pub fn start(self) -> MaterializerHandle {
        let name = self.stream.url().to_string();
        let run = self.into_run();
        MaterializerHandle(TaskHandle::spawn(
            "the materializer task",
            &name,
            None,
            OnDrop::Abort,
            |token, committed| run.run(token, committed),
        ))
    }

    /// Run on the current task until `shutdown` is cancelled, the stream is
    /// closed (or, with [`LiveMode::Off`], caught up), or an error stops it.
    pub async fn run(self, shutdown: CancellationToken) -> Result<StopReason> {
        let (tx, _rx) = watch::channel(None);
        self.into_run().run(shutdown, tx).await
    }

    fn into_run(self) -> Run<S> {
        Run {
            stream: self.stream,
            store: Some(self.store),
            live: self.live,
            start: self.start,
            retry: self.retry,
            schemas: self.schemas,
            batch: BatchState::default(),
        }
    }
}

/// A running materializer. Dropping it aborts the task; what was committed
/// stays committed.
pub struct MaterializerHandle(TaskHandle<StopReason>);

crate::runtime::reader_handle! {
    MaterializerHandle -> StopReason;
    /// The stream URL.
    name;
    /// The last committed offset.
    offset;
    /// A receiver that sees every committed offset.
    subscribe;
    /// Whether the materializer has stopped.
    is_finished;
    /// Ask it to stop without waiting.
    request_shutdown;
    /// Stop after the batch in hand is applied (or dropped, inside an
    /// unfinished snapshot) and wait.
    shutdown;
    /// Wait for `signal` (or for the materializer to stop on its own), then
    /// [`shutdown`](MaterializerHandle::shutdown).
    shutdown_on;
    /// [`shutdown_on`](MaterializerHandle::shutdown_on) ctrl-c.
    shutdown_on_ctrl_c;
    /// Wait until it stops on its own.
    join;
    /// Stop at once; the store keeps what was committed.
    abort;
    /// Let it run without a handle.
    detach;
}

/// Per-connection reading state: reset on every reconnect, since reading
/// restarts from the committed offset.
#[derive(Default)]
struct BatchState {
    in_snapshot: bool,
    /// The transaction of the last change, until a message outside it shows it complete.
    open_txid: Option<String>,
}

struct Run<S> {
    stream: Stream,
    store: Option<S>,
    live: LiveMode,
    start: Offset,
    retry: RetryPolicy,
    schemas: HashMap<String, SchemaCheck>,
    batch: BatchState,
}

impl<S: StateStore> Run<S> {
    async fn run(
        mut self,
        token: CancellationToken,
        committed: watch::Sender<Option<Offset>>,
    ) -> Result<StopReason> {
        let url = self.stream.url().to_string();
        let mut position = match self.call(move |s| s.committed_offset(&url)).await?? {
            Some(o) => o,
            None => self.start.clone(),
        };
        committed.send_replace(Some(position.clone()));
        let mut backoff = Backoff::new(&self.retry);
        loop {
            let error = match self
                .read_from(&mut position, &token, &committed, &mut backoff)
                .await
            {
                Ok(reason) => {
                    self.call(|s| s.discard_staged()).await??;
                    return Ok(reason);
                }
                Err(e) => e,
            };
            // Anything staged will be read again from the committed offset.
            self.call(|s| s.discard_staged()).await??;
            self.batch = BatchState::default();
            let retry = error.is_retryable()
                || matches!(
                    error.kind(),
                    ErrorKind::NoProgress { .. } | ErrorKind::Decode(_)
                );
            let delay = match backoff.next_delay(error.retry_after()) {
                Some(d) if retry => d,
                _ => return Err(error),
            };
            tracing::warn!(%error, delay_ms = delay.as_millis() as u64, offset = %position, "materializer reconnecting");
            tokio::select! {
                _ = token.cancelled() => return Ok(StopReason::Shutdown),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn read_from(
        &mut self,
        position: &mut Offset,
        token: &CancellationToken,
        committed: &watch::Sender<Option<Offset>>,
        backoff: &mut Backoff,
    ) -> Result<StopReason> {
        let mut session = Session::new(self.stream.clone(), position.clone(), self.live, true);
        // Where the batch being read started, for error messages.
        let mut read_at = position.clone();
        loop {
            let next = tokio::select! {
                biased;
                _ = token.cancelled() => return Ok(StopReason::Shutdown),
                next = session.next_chunk() => next,
            };
            let Some(chunk) = next else {
                return Ok(StopReason::CaughtUp);
            };
            let chunk = chunk?;
            let closed = chunk.closed;
            let (batch, jump) = self.prepare(chunk, &read_at)?;
            read_at = batch.offset.clone();
            let commit = batch.commit;
            let offset = batch.offset.clone();
            self.call(move |s| s.apply(&batch)).await??;
            if commit {
                *position = offset;
                committed.send_replace(Some(position.clone()));
                backoff.reset();
            }
            if let Some(target) = jump {
                // A reset pointing ahead: continue from there.
                *position = target.clone();
                session = Session::new(self.stream.clone(), target.clone(), self.live, true);
                read_at = target;
                continue;
            }
            if closed {
                return Ok(StopReason::Closed);
            }
        }
    }

    /// Validate a chunk's messages and turn them into store ops. Returns a
    /// reset's forward target when the reset names an offset ahead.
    fn prepare(
        &mut self,
        mut chunk: Chunk,
        read_at: &Offset,
    ) -> Result<(ApplyBatch, Option<Offset>)> {
        let messages = chunk.take_json_messages()?;
        let mut ops = Vec::with_capacity(messages.len());
        let mut completed = Vec::new();
        let mut jump = None;
        for (index, raw) in messages.iter().enumerate() {
            let at = Position {
                offset: Some(read_at),
                index,
            };
            let message = StateMessage::parse(raw, at)?;
            let txid = match &message {
                StateMessage::Change(c) => c.txid.as_deref(),
                StateMessage::Control(_) => None,
            };
            if self.batch.open_txid.as_deref() != txid
                && let Some(done) = self.batch.open_txid.take()
            {
                completed.push(done);
            }
            match message {
                StateMessage::Change(change) => {
                    self.batch.open_txid = change.txid.clone();
                    ops.push(self.op(change, at)?);
                }
                StateMessage::Control(control) => match control.kind {
                    ControlKind::SnapshotStart => self.batch.in_snapshot = true,
                    ControlKind::SnapshotEnd => self.batch.in_snapshot = false,
                    ControlKind::Reset => {
                        // A reset starts over: it also ends an open snapshot.
                        self.batch.in_snapshot = false;
                        ops.push(StoreOp::Clear);
                        // Only forward: a reset pointing at or before itself
                        // means "from here" (jumping back would loop).
                        jump = control.offset.filter(|o| *o > chunk.offset);
                        if jump.is_some() {
                            break;
                        }
                    }
                },
            }
        }
        // At the tail every append before it is complete, so is its transaction.
        if (chunk.up_to_date || chunk.closed || jump.is_some())
            && let Some(done) = self.batch.open_txid.take()
        {
            completed.push(done);
        }
        let offset = jump.clone().unwrap_or(chunk.offset);
        let commit = !self.batch.in_snapshot && (chunk.exact || jump.is_some());
        Ok((
            ApplyBatch {
                ops,
                offset,
                commit,
                completed_txids: completed,
            },
            jump,
        ))
    }

    fn op(&self, change: Change, at: Position<'_>) -> Result<StoreOp> {
        if let (Some(check), Some(value)) = (self.schemas.get(&change.entity_type), &change.value)
            && change.operation != Operation::Delete
        {
            check(value).map_err(|reason| {
                invalid(
                    at,
                    "value",
                    format_args!("{}/{}: {reason}", change.entity_type, change.key),
                )
            })?;
        }
        Ok(match change.operation {
            Operation::Delete => StoreOp::Delete {
                entity_type: change.entity_type,
                key: change.key,
                txid: change.txid,
            },
            operation => StoreOp::Put {
                entity_type: change.entity_type,
                key: change.key,
                // Present for inserts and updates (checked when parsed).
                value: change.value.unwrap_or(serde_json::Value::Null),
                operation,
                txid: change.txid,
            },
        })
    }

    /// Call the store: inline, or on the blocking pool for blocking stores.
    async fn call<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Result<R> {
        let Some(mut store) = self.store.take() else {
            return Err(Error::new(ErrorKind::Internal).with_message("the state store is gone"));
        };
        if !store.is_blocking() {
            let r = f(&mut store);
            self.store = Some(store);
            return Ok(r);
        }
        let (store, r) = tokio::task::spawn_blocking(move || {
            let r = f(&mut store);
            (store, r)
        })
        .await
        .map_err(|e| crate::runtime::join_error("the state store call", e))?;
        self.store = Some(store);
        Ok(r)
    }
}
