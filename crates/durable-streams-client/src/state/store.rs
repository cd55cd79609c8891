//! Where materialized state lives: the [`StateStore`] trait and the
//! in-memory store with typed collections, change notifications and
//! `await_txid`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use super::message::Operation;
use crate::error::{Error, ErrorKind, Result};
use crate::offset::Offset;

/// One change to apply, already validated.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StoreOp {
    /// Insert or update: store `value` at `entity_type`/`key`.
    Put {
        /// Entity type.
        entity_type: String,
        /// Entity key.
        key: String,
        /// The new value.
        value: Value,
        /// Insert or update (for notifications).
        operation: Operation,
        /// The change's transaction, if any.
        txid: Option<String>,
    },
    /// Remove the entity at `entity_type`/`key` (absent is fine).
    Delete {
        /// Entity type.
        entity_type: String,
        /// Entity key.
        key: String,
        /// The change's transaction, if any.
        txid: Option<String>,
    },
    /// Clear everything (a `reset` control message).
    Clear,
}

/// What the materializer hands a store for one read batch.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ApplyBatch {
    /// The changes, in stream order.
    pub ops: Vec<StoreOp>,
    /// Where the next read starts once these are applied.
    pub offset: Offset,
    /// `true`: make every staged op and these visible and durable together
    /// with `offset`, in one transaction. `false`: the ops are inside an open
    /// snapshot; stage them (invisible to readers) and do not record `offset`.
    pub commit: bool,
    /// Transactions whose every change is now applied (visible once committed).
    pub completed_txids: Vec<String>,
}

/// A place to materialize state into. Implementations must apply a
/// committing [`ApplyBatch`] atomically: its ops (and any staged ones) and
/// its offset become durable together or not at all, so a restart resumes
/// exactly where the state is.
///
/// Methods are synchronous; a store that blocks (a database) says so in
/// [`is_blocking`](StateStore::is_blocking) and is called on tokio's
/// blocking pool.
pub trait StateStore: Send + 'static {
    /// The offset of the last committed batch of `stream` (its URL; `None`
    /// for an empty store). A store that remembers which stream it holds
    /// refuses another.
    fn committed_offset(&mut self, stream: &str) -> Result<Option<Offset>>;

    /// Apply one batch (see [`ApplyBatch::commit`]).
    fn apply(&mut self, batch: &ApplyBatch) -> Result<()>;

    /// Drop anything staged but not committed (the materializer reconnects
    /// from the committed offset and will deliver it again).
    fn discard_staged(&mut self) -> Result<()>;

    /// Whether calls may block the thread (default `true`).
    fn is_blocking(&self) -> bool {
        true
    }
}

/// A change as applied, for [`MemoryState::subscribe`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AppliedChange {
    /// An insert or update.
    Put {
        /// Entity type.
        entity_type: String,
        /// Entity key.
        key: String,
        /// The new value.
        value: Value,
        /// Insert or update.
        operation: Operation,
    },
    /// A delete.
    Delete {
        /// Entity type.
        entity_type: String,
        /// Entity key.
        key: String,
    },
    /// Everything was cleared (`reset`).
    Cleared,
}

/// How many completed transaction ids [`MemoryState::await_txid`] remembers.
pub const REMEMBERED_TXIDS: usize = 65_536;

/// Capacity of the change notification channel; a subscriber that falls
/// further behind gets `RecvError::Lagged` and should re-read the state.
pub const NOTIFY_CAPACITY: usize = 4_096;

#[derive(Default)]
struct Tables {
    types: HashMap<String, BTreeMap<String, Value>>,
    offset: Option<Offset>,
}

#[derive(Default)]
struct Txids {
    done: HashSet<String>,
    order: VecDeque<String>,
}

struct Shared {
    tables: RwLock<Tables>,
    txids: RwLock<Txids>,
    /// Bumped after every commit; `await_txid` waits on it.
    version: watch::Sender<u64>,
    changes: broadcast::Sender<AppliedChange>,
}

/// The in-memory materialized state: a cheap, cloneable read handle that
/// the store behind it ([`MemoryStore`]) updates. Readers never see half a
/// batch or half a snapshot.
#[derive(Clone)]
pub struct MemoryState {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemoryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.read();
        f.debug_struct("MemoryState")
            .field("types", &t.types.len())
            .field("offset", &t.offset)
            .finish()
    }
}

impl MemoryState {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.shared.tables.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The value at `entity_type`/`key`.
    pub fn get(&self, entity_type: &str, key: &str) -> Option<Value> {
        self.read().types.get(entity_type)?.get(key).cloned()
    }

    /// Every entity of `entity_type`, ordered by key.
    pub fn entries(&self, entity_type: &str) -> Vec<(String, Value)> {
        self.read()
            .types
            .get(entity_type)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// The entity types present.
    pub fn types(&self) -> Vec<String> {
        let mut types: Vec<_> = self.read().types.keys().cloned().collect();
        types.sort();
        types
    }

    /// Number of entities of `entity_type`.
    pub fn len(&self, entity_type: &str) -> usize {
        self.read().types.get(entity_type).map_or(0, BTreeMap::len)
    }

    /// A copy of everything: type -> key -> value.
    pub fn snapshot(&self) -> BTreeMap<String, BTreeMap<String, Value>> {
        self.read()
            .types
            .iter()
            .map(|(t, m)| (t.clone(), m.clone()))
            .collect()
    }

    /// The offset the state corresponds to (the last committed batch).
    pub fn offset(&self) -> Option<Offset> {
        self.read().offset.clone()
    }

    /// A typed view of `entity_type`. Register the type with
    /// [`MaterializerBuilder::schema`](super::MaterializerBuilder::schema)
    /// so malformed values are rejected when applied, not when read.
    pub fn collection<T: DeserializeOwned>(&self, entity_type: impl Into<String>) -> Collection<T> {
        Collection {
            state: self.clone(),
            entity_type: entity_type.into(),
            _type: PhantomData,
        }
    }

    /// Every change as it is applied (snapshots arrive when they complete).
    pub fn subscribe(&self) -> broadcast::Receiver<AppliedChange> {
        self.shared.changes.subscribe()
    }

    /// A receiver whose value changes after every committed batch.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.shared.version.subscribe()
    }

    /// Resolves once every change of transaction `txid` has been applied and
    /// is visible (never before its last change). Remembers the last
    /// [`REMEMBERED_TXIDS`] transactions; wrap it in a timeout if the
    /// transaction may never be written.
    pub async fn await_txid(&self, txid: &str) {
        let mut version = self.shared.version.subscribe();
        loop {
            if self.txid_done(txid) {
                return;
            }
            if version.changed().await.is_err() {
                // The store is gone: nothing more will be applied.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Whether transaction `txid` is known to be completely applied.
    pub fn txid_done(&self, txid: &str) -> bool {
        self.shared
            .txids
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .done
            .contains(txid)
    }
}

/// A typed view of one entity type of a [`MemoryState`].
pub struct Collection<T> {
    state: MemoryState,
    entity_type: String,
    _type: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Collection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collection")
            .field("entity_type", &self.entity_type)
            .finish()
    }
}

impl<T: DeserializeOwned> Collection<T> {
    /// The entity at `key`, deserialized.
    pub fn get(&self, key: &str) -> Result<Option<T>> {
        self.state
            .get(&self.entity_type, key)
            .map(|v| self.decode(key, v))
            .transpose()
    }

    /// Every entity, ordered by key.
    pub fn entries(&self) -> Result<Vec<(String, T)>> {
        self.state
            .entries(&self.entity_type)
            .into_iter()
            .map(|(k, v)| {
                let t = self.decode(&k, v)?;
                Ok((k, t))
            })
            .collect()
    }

    /// Number of entities.
    pub fn len(&self) -> usize {
        self.state.len(&self.entity_type)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn decode(&self, key: &str, value: Value) -> Result<T> {
        serde_json::from_value(value).map_err(|e| {
            Error::new(ErrorKind::InvalidMessage { field: "value" }).with_message(format!(
                "{}/{key} does not match {}: {e}",
                self.entity_type,
                std::any::type_name::<T>()
            ))
        })
    }
}

/// The in-memory [`StateStore`] (the default). Read it through
/// [`MemoryStore::state`]. Changes that cannot be committed yet (an
/// unfinished snapshot, or the pieces of a response larger than a read
/// chunk) are staged coalesced per key, so staging memory is bounded by the
/// number of keys, not by the stream's length; notifications then carry
/// the last change of each staged key. Snapshot changes are staged until the snapshot
/// ends (a snapshot is held in memory while it streams in).
pub struct MemoryStore {
    shared: Arc<Shared>,
    staged: Staged,
}

/// Staged changes: the last op per key, and whether a reset came first.
#[derive(Default)]
struct Staged {
    cleared: bool,
    ops: HashMap<(String, String), StoreOp>,
    txids: VecDeque<String>,
}

impl Staged {
    fn is_empty(&self) -> bool {
        !self.cleared && self.ops.is_empty() && self.txids.is_empty()
    }

    fn add(&mut self, batch: &ApplyBatch) {
        for op in &batch.ops {
            match op {
                StoreOp::Clear => {
                    self.cleared = true;
                    self.ops.clear();
                }
                StoreOp::Put {
                    entity_type, key, ..
                }
                | StoreOp::Delete {
                    entity_type, key, ..
                } => {
                    self.ops
                        .insert((entity_type.clone(), key.clone()), op.clone());
                }
            }
        }
        self.txids.extend(batch.completed_txids.iter().cloned());
        while self.txids.len() > REMEMBERED_TXIDS {
            self.txids.pop_front();
        }
    }

    fn take(&mut self) -> (Vec<StoreOp>, Vec<String>) {
        let staged = std::mem::take(self);
        let mut ops = Vec::with_capacity(staged.ops.len() + 1);
        if staged.cleared {
            ops.push(StoreOp::Clear);
        }
        ops.extend(staged.ops.into_values());
        (ops, staged.txids.into())
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("staged", &self.staged.ops.len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        let (version, _) = watch::channel(0);
        let (changes, _) = broadcast::channel(NOTIFY_CAPACITY);
        MemoryStore {
            shared: Arc::new(Shared {
                tables: RwLock::new(Tables::default()),
                txids: RwLock::new(Txids::default()),
                version,
                changes,
            }),
            staged: Staged::default(),
        }
    }

    /// The read handle.
    pub fn state(&self) -> MemoryState {
        MemoryState {
            shared: Arc::clone(&self.shared),
        }
    }

    fn commit(&mut self, ops: Vec<StoreOp>, offset: &Offset, txids: Vec<String>) {
        let mut notices = Vec::with_capacity(ops.len());
        {
            let mut tables = self
                .shared
                .tables
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for op in ops {
                match op {
                    StoreOp::Put {
                        entity_type,
                        key,
                        value,
                        operation,
                        ..
                    } => {
                        tables
                            .types
                            .entry(entity_type.clone())
                            .or_default()
                            .insert(key.clone(), value.clone());
                        notices.push(AppliedChange::Put {
                            entity_type,
                            key,
                            value,
                            operation,
                        });
                    }
                    StoreOp::Delete {
                        entity_type, key, ..
                    } => {
                        if let Some(m) = tables.types.get_mut(&entity_type) {
                            m.remove(&key);
                            if m.is_empty() {
                                tables.types.remove(&entity_type);
                            }
                        }
                        notices.push(AppliedChange::Delete { entity_type, key });
                    }
                    StoreOp::Clear => {
                        tables.types.clear();
                        notices.push(AppliedChange::Cleared);
                    }
                }
            }
            tables.offset = Some(offset.clone());
        }
        {
            let mut done = self.shared.txids.write().unwrap_or_else(|p| p.into_inner());
            for t in txids {
                if done.done.insert(t.clone()) {
                    done.order.push_back(t);
                }
                while done.order.len() > REMEMBERED_TXIDS {
                    if let Some(old) = done.order.pop_front() {
                        done.done.remove(&old);
                    }
                }
            }
        }
        for n in notices {
            // No subscribers is fine.
            let _ = self.shared.changes.send(n);
        }
        self.shared.version.send_modify(|v| *v += 1);
    }
}

impl StateStore for MemoryStore {
    fn committed_offset(&mut self, _stream: &str) -> Result<Option<Offset>> {
        Ok(self.state().offset())
    }

    fn apply(&mut self, batch: &ApplyBatch) -> Result<()> {
        if batch.commit && self.staged.is_empty() {
            // The common case: one whole read batch, applied in order.
            self.commit(
                batch.ops.clone(),
                &batch.offset,
                batch.completed_txids.clone(),
            );
            return Ok(());
        }
        self.staged.add(batch);
        if batch.commit {
            let (ops, txids) = self.staged.take();
            self.commit(ops, &batch.offset, txids);
        }
        Ok(())
    }

    fn discard_staged(&mut self) -> Result<()> {
        self.staged = Staged::default();
        Ok(())
    }

    fn is_blocking(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: u64, v: u64) -> StoreOp {
        StoreOp::Put {
            entity_type: "t".into(),
            key: format!("k{k}"),
            value: Value::from(v),
            operation: Operation::Update,
            txid: None,
        }
    }

    fn batch(ops: Vec<StoreOp>, commit: bool) -> ApplyBatch {
        ApplyBatch {
            ops,
            offset: Offset::parse("0_1").unwrap(),
            commit,
            completed_txids: vec![],
        }
    }

    #[test]
    fn staging_is_bounded_by_keys_and_commits_the_final_state() {
        let mut store = MemoryStore::new();
        let state = store.state();
        store.apply(&batch(vec![put(99, 1)], true)).unwrap();
        // 100,000 updates over 10 keys, staged (pieces of one large response).
        for round in 0..10_000u64 {
            let ops = (0..10).map(|k| put(k, round)).collect();
            store.apply(&batch(ops, false)).unwrap();
            assert!(store.staged.ops.len() <= 10);
        }
        assert_eq!(state.get("t", "k3"), None);
        assert_eq!(state.len("t"), 1, "staged changes are invisible");
        store
            .apply(&batch(vec![StoreOp::Clear, put(1, 7)], false))
            .unwrap();
        store.apply(&batch(vec![put(2, 8)], true)).unwrap();
        assert_eq!(
            state.get("t", "k99"),
            None,
            "the reset cleared committed state"
        );
        assert_eq!(state.get("t", "k1"), Some(Value::from(7)));
        assert_eq!(state.get("t", "k2"), Some(Value::from(8)));
        assert_eq!(state.len("t"), 2);
        assert!(store.staged.is_empty());
    }
}
