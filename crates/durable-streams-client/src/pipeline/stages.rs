//! The processing stages: processor workers (the per-message function) and
//! batchers (collect, flush on size, timeout or drain), and how they are
//! started.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::builder::{BatcherSpec, KeyFn, ProcessFn};
use super::reader::Dispatch;
use super::run::Shared;
use super::{BatchInfo, BatchTrigger, Failure, Message, Processed, Stage};
use crate::error::Error;
use crate::runtime::{catch_panic, internal};

/// Start one task per batcher; returns the processors' routing table.
pub(super) fn spawn_batchers<T: Send + 'static>(
    batchers: Vec<BatcherSpec<T>>,
    channel_capacity: usize,
    shared: &Arc<Shared>,
    set: &mut JoinSet<()>,
) -> Arc<Routing<T>> {
    let mut txs = Vec::with_capacity(batchers.len());
    let mut index = HashMap::new();
    for (i, spec) in batchers.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel(channel_capacity.max(spec.batch_size.min(1024)));
        index.insert(Arc::clone(&spec.name), i);
        txs.push(tx);
        set.spawn(batch_loop(spec, rx, Arc::clone(shared)).in_current_span());
    }
    Arc::new(Routing { index, txs })
}

/// The process function used when none is configured: send every message
/// to the first batcher, or finish it when there is none.
pub(super) fn default_process<T: Send + 'static>(routing: &Routing<T>) -> ProcessFn<T> {
    let first = routing
        .index
        .iter()
        .find(|(_, i)| **i == 0)
        .map(|(name, _)| Cow::<'static, str>::Owned(name.to_string()));
    Arc::new(move |m| {
        let out = match &first {
            Some(name) => Processed::batch(name.clone(), m),
            None => Processed::Done,
        };
        Box::pin(async move { Ok(out) })
    })
}

/// Start `processors` workers: with a partition key each has its own
/// channel (equal keys, same worker), otherwise they share one.
pub(super) fn spawn_workers<T: Send + 'static>(
    processors: usize,
    channel_capacity: usize,
    partition: Option<&KeyFn<T>>,
    process: &ProcessFn<T>,
    routing: &Arc<Routing<T>>,
    shared: &Arc<Shared>,
    set: &mut JoinSet<()>,
) -> Dispatch<T> {
    let mut spawn = |rx| {
        set.spawn(
            worker(
                rx,
                Arc::clone(process),
                Arc::clone(routing),
                Arc::clone(shared),
            )
            .in_current_span(),
        );
    };
    if partition.is_some() {
        let mut txs = Vec::with_capacity(processors);
        for _ in 0..processors {
            let (tx, rx) = mpsc::channel::<Envelope<T>>(channel_capacity);
            txs.push(tx);
            spawn(Arc::new(tokio::sync::Mutex::new(rx)));
        }
        Dispatch::Partitioned(txs)
    } else {
        let (tx, rx) = mpsc::channel::<Envelope<T>>(channel_capacity);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..processors {
            spawn(Arc::clone(&rx));
        }
        Dispatch::AnyWorker(tx)
    }
}

/// A message on its way through the stages, with its chunk's sequence
/// number in the ack tracker.
pub(super) struct Envelope<T> {
    pub(super) seq: u64,
    pub(super) message: Message<T>,
}

/// Where processors send messages: each batcher's input channel, by name.
pub(super) struct Routing<T> {
    pub(super) index: HashMap<Arc<str>, usize>,
    pub(super) txs: Vec<mpsc::Sender<Envelope<T>>>,
}

pub(super) async fn worker<T: Send + 'static>(
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Envelope<T>>>>,
    process: ProcessFn<T>,
    routing: Arc<Routing<T>>,
    shared: Arc<Shared>,
) {
    loop {
        let next = rx.lock().await.recv().await;
        let Some(Envelope { seq, message }) = next else {
            return;
        };
        let position = message.position.clone();
        let payload = message.payload.clone();
        let outcome = catch_panic("process", process(message))
            .await
            .and_then(|r| r);
        let error = match outcome {
            Ok(Processed::Done) => {
                shared.complete(seq, 1);
                continue;
            }
            Ok(Processed::Batch { batcher, message }) => match routing.index.get(&*batcher) {
                Some(&i) => {
                    if routing.txs[i]
                        .send(Envelope { seq, message })
                        .await
                        .is_err()
                    {
                        shared.set_fatal(internal(format!("batcher `{batcher}` is gone")));
                    }
                    continue;
                }
                None => Error::invalid_argument("batcher", format!("no batcher named `{batcher}`")),
            },
            Err(e) => e,
        };
        shared
            .fail(
                seq,
                Failure {
                    position,
                    payload,
                    error,
                    stage: Stage::Processor,
                },
            )
            .await;
    }
}

pub(super) async fn batch_loop<T: Send + 'static>(
    spec: BatcherSpec<T>,
    mut rx: mpsc::Receiver<Envelope<T>>,
    shared: Arc<Shared>,
) {
    let mut pending: Vec<Envelope<T>> = Vec::with_capacity(spec.batch_size.min(4096));
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let trigger = tokio::select! {
            next = rx.recv() => match next {
                Some(envelope) => {
                    if pending.is_empty() {
                        deadline = Some(tokio::time::Instant::now() + spec.batch_timeout);
                    }
                    pending.push(envelope);
                    if pending.len() < spec.batch_size {
                        continue;
                    }
                    BatchTrigger::Size
                }
                None => {
                    if !pending.is_empty() {
                        flush(&spec, std::mem::take(&mut pending), BatchTrigger::Drain, &shared).await;
                    }
                    return;
                }
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => BatchTrigger::Timeout,
        };
        deadline = None;
        let batch = std::mem::replace(&mut pending, Vec::with_capacity(spec.batch_size.min(4096)));
        flush(&spec, batch, trigger, &shared).await;
    }
}

async fn flush<T: Send + 'static>(
    spec: &BatcherSpec<T>,
    batch: Vec<Envelope<T>>,
    trigger: BatchTrigger,
    shared: &Shared,
) {
    let size = batch.len();
    let mut seqs = Vec::with_capacity(size);
    let mut keep = Vec::with_capacity(size);
    let mut messages = Vec::with_capacity(size);
    for Envelope { seq, message } in batch {
        seqs.push(seq);
        keep.push((message.position.clone(), message.payload.clone()));
        messages.push(message);
    }
    let info = BatchInfo {
        batcher: Arc::clone(&spec.name),
        size,
        trigger,
    };
    let started = Instant::now();
    let result = catch_panic("batch", (spec.batch_fn)(info, messages))
        .await
        .and_then(|r| r);
    crate::telemetry::pipeline_batch(&shared.name, &spec.name, size, started.elapsed());
    match result {
        Ok(()) => shared.complete_all(&seqs),
        Err(error) => {
            let stage = Stage::Batcher(Arc::clone(&spec.name));
            let failures = seqs
                .into_iter()
                .zip(keep)
                .map(|(seq, (position, payload))| {
                    let failure = Failure {
                        position,
                        payload,
                        error: error.clone(),
                        stage: stage.clone(),
                    };
                    (seq, failure)
                })
                .collect();
            shared.fail_all(failures).await;
        }
    }
}
