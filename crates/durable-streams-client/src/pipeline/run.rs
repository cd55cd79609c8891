//! Running a pipeline: start the committer, the batchers and the
//! processors, run the reader, then drain everything in order and commit.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::ack::{self, AckTracker};
use super::builder::{FailureFn, PipelineBuilder};
use super::dead_letter::{close_dead_letters, open_dead_letters};
use super::reader::{Hold, Reader};
use super::stages::{default_process, spawn_batchers, spawn_workers};
use crate::checkpoint::DynCheckpointStore;
use crate::consumer::StopReason;
use crate::error::{Error, ErrorKind, Result};
use crate::offset::Offset;
use crate::producer::Producer;
use crate::runtime::join_error;
use tokio::sync::Semaphore;

/// Run a pipeline until it stops: the steps below, in order.
pub(super) async fn run<T: Send + 'static>(
    c: PipelineBuilder<T>,
    token: CancellationToken,
    committed: watch::Sender<Option<Offset>>,
) -> Result<StopReason> {
    let stop = token.child_token();
    let Some(start) = c.reader.start_offset(&stop, &committed).await? else {
        return Ok(StopReason::Shutdown);
    };
    let (dead_letters, own_producer) = open_dead_letters(c.dead_letter, &c.reader.name).await?;
    let (ackable_tx, ackable_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        name: Arc::from(c.reader.name.as_str()),
        json: c.json,
        tracker: Mutex::new(AckTracker::default()),
        ackable: ackable_tx,
        on_failure: c.on_failure,
        dead_letters: dead_letters.clone(),
        stop: stop.clone(),
        fatal: Mutex::new(None),
    });

    // Every task lives in a JoinSet owned by this future: dropping the
    // future (abort) aborts them all.
    let mut committer_set = JoinSet::new();
    committer_set.spawn(
        commit_loop(
            ackable_rx,
            c.reader.store.clone(),
            Arc::clone(&shared.name),
            committed,
        )
        .in_current_span(),
    );
    let mut batcher_set = JoinSet::new();
    let routing = spawn_batchers(c.batchers, c.channel_capacity, &shared, &mut batcher_set);
    let process = match c.process {
        Some(p) => p,
        None => default_process(&routing),
    };
    let mut worker_set = JoinSet::new();
    let dispatch = spawn_workers(
        c.processors,
        c.channel_capacity,
        c.partition.as_ref(),
        &process,
        &routing,
        &shared,
        &mut worker_set,
    );
    drop(routing);

    let reader = Reader {
        stream: c.reader.stream,
        live: c.reader.live,
        json: c.json,
        retry: c.reader.retry,
        decode: c.decode,
        partition: c.partition,
        to_processors: dispatch,
        shared: Arc::clone(&shared),
        messages: Arc::new(Semaphore::new(c.max_in_flight_messages)),
        max_messages: c.max_in_flight_messages,
        bytes: Arc::new(Semaphore::new(c.max_in_flight_bytes)),
        max_bytes: c.max_in_flight_bytes,
    };
    let read_result = reader.run(start, &stop).await;
    tracing::debug!(result = ?read_result, "pipeline reader stopped; draining");

    // Drain: the reader dropped the processor channels; workers finish and
    // drop the batcher channels; batchers flush and end.
    let task_error = drain_stages(&mut worker_set, &mut batcher_set).await;
    close_dead_letters(dead_letters.as_deref(), own_producer).await;
    let fatal = shared
        .fatal
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    // Dropping the last sender of `ackable` ends the committer after a
    // final commit.
    drop(shared);
    let commit_result = finish_committer(&mut committer_set).await;
    if let Some(error) = fatal {
        return Err(error);
    }
    if let Some(error) = task_error {
        return Err(error);
    }
    let reason = read_result?;
    commit_result?;
    Ok(reason)
}

/// Wait for the workers, then the batchers; the first task that did not
/// return normally is the error.
async fn drain_stages(workers: &mut JoinSet<()>, batchers: &mut JoinSet<()>) -> Option<Error> {
    let mut task_error = None;
    for set in [workers, batchers] {
        while let Some(joined) = set.join_next().await {
            if let Err(e) = joined {
                task_error.get_or_insert(join_error("a pipeline task", e));
            }
        }
    }
    task_error
}

/// Wait for the committer's final commit.
async fn finish_committer(set: &mut JoinSet<Result<()>>) -> Result<()> {
    let mut commit_result = Ok(());
    while let Some(joined) = set.join_next().await {
        commit_result = match joined {
            Ok(r) => r,
            Err(e) => Err(Error::new(ErrorKind::Checkpoint)
                .with_message(format!("the pipeline committer ended abnormally: {e}"))),
        };
    }
    commit_result
}

/// Save each new ackable offset (coalescing bursts), and once more at the end.
async fn commit_loop(
    mut ackable: watch::Receiver<Option<Offset>>,
    store: Option<Arc<dyn DynCheckpointStore>>,
    name: Arc<str>,
    committed: watch::Sender<Option<Offset>>,
) -> Result<()> {
    let mut last_error = None;
    loop {
        let ended = ackable.changed().await.is_err();
        let Some(offset) = ackable.borrow_and_update().clone() else {
            if ended {
                break;
            }
            continue;
        };
        // Checkpoints only move forward.
        if crate::read::checkpoint_moves(committed.borrow().as_ref(), &offset) {
            let saved = match &store {
                Some(store) => store.save_boxed(&name, &offset).await,
                None => Ok(()),
            };
            match saved {
                Ok(()) => {
                    last_error = None;
                    crate::telemetry::pipeline_checkpoint(&name, offset.as_str());
                    committed.send_replace(Some(offset));
                }
                Err(e) => {
                    tracing::warn!(error = %e, %offset, "pipeline checkpoint save failed; will retry on the next advance");
                    last_error = Some(e);
                }
            }
        }
        if ended {
            break;
        }
    }
    match last_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// State shared by the reader, the workers and the batchers.
pub(super) struct Shared {
    pub(super) name: Arc<str>,
    pub(super) json: bool,
    pub(super) tracker: Mutex<AckTracker<Hold>>,
    /// The latest offset whose chunks are all done (for the committer).
    pub(super) ackable: watch::Sender<Option<Offset>>,
    pub(super) on_failure: Option<FailureFn>,
    pub(super) dead_letters: Option<Arc<Producer>>,
    /// Cancelled on a fatal error: the reader stops, the rest drains.
    pub(super) stop: CancellationToken,
    pub(super) fatal: Mutex<Option<Error>>,
}

impl Shared {
    pub(super) fn complete(&self, seq: u64, n: usize) {
        let advance = self
            .tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .complete(seq, n);
        if let Some(advance) = advance {
            self.advanced(advance);
        }
    }

    pub(super) fn complete_all(&self, seqs: &[u64]) {
        let mut last: Option<ack::Advance> = None;
        {
            let mut tracker = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
            for &seq in seqs {
                if let Some(a) = tracker.complete(seq, 1) {
                    let merged = match last.take() {
                        None => a,
                        Some(prev) => ack::Advance {
                            offset: a.offset.or(prev.offset),
                            chunks: prev.chunks + a.chunks,
                            messages: prev.messages + a.messages,
                        },
                    };
                    last = Some(merged);
                }
            }
        }
        if let Some(a) = last {
            self.advanced(a);
        }
    }

    pub(super) fn advanced(&self, advance: ack::Advance) {
        crate::telemetry::pipeline_acked(&self.name, advance.chunks, advance.messages);
        if let Some(offset) = advance.offset {
            self.ackable.send_replace(Some(offset));
        }
    }

    pub(super) fn set_fatal(&self, error: Error) {
        tracing::error!(%error, "pipeline stopping after a fatal error");
        let mut fatal = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        fatal.get_or_insert(error);
        self.stop.cancel();
    }
}
